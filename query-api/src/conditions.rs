//! The `WHERE` clause of a list query, built from the filters a request gives.

use tokio_postgres::types::ToSql;

/// A parameter of a list query.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// The conditions of one list query and their parameters, numbered in order.
///
/// Each statement names only the filters its request gave, so Postgres plans
/// it with the index that filter has, also as a cached statement. One
/// statement with every filter as `$n IS NULL OR …` let Postgres settle on a
/// generic plan that walks the paging index and filters row by row: a list
/// by date of birth took 2.8 s at 1M patients.
#[derive(Default)]
pub(crate) struct Conditions<'a> {
    sql: Vec<String>,
    params: Vec<Param<'a>>,
}

impl<'a> Conditions<'a> {
    /// Binds `value` as the next parameter and returns its placeholder.
    pub fn bind(&mut self, value: Param<'a>) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// Adds `condition`.
    pub fn and(&mut self, condition: String) -> &mut Self {
        self.sql.push(condition);
        self
    }

    /// Adds the condition `make` writes for the placeholder of `value`, when
    /// the request gave it.
    pub fn when<T: ToSql + Sync>(
        &mut self,
        value: &'a Option<T>,
        make: impl FnOnce(&str) -> String,
    ) -> &mut Self {
        if let Some(v) = value {
            let p = self.bind(v);
            self.sql.push(make(&p));
        }
        self
    }

    /// `WHERE a AND b …`, or nothing without conditions.
    pub fn clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }

    /// The parameters, in placeholder order.
    pub fn params(&self) -> &[Param<'a>] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_filters_become_conditions_numbered_in_order() {
        let (given, missing, cursor): (Option<String>, Option<String>, (i64, i64)) =
            (Some("Doe".into()), None, (7, 8));
        let mut c = Conditions::default();
        c.when(&missing, |p| format!("p.client_id = {p}"))
            .when(&given, |p| format!("p.last_name = {p}"));
        let (a, b) = (c.bind(&cursor.0), c.bind(&cursor.1));
        c.and(format!("(p.created_at, p.patient_id) > ({a}, {b})"));
        let limit = c.bind(&51i64);
        assert_eq!(
            c.clause(),
            "WHERE p.last_name = $1 AND (p.created_at, p.patient_id) > ($2, $3)"
        );
        assert_eq!(limit, "$4");
        assert_eq!(c.params().len(), 4);
    }

    #[test]
    fn no_filter_no_where() {
        let c = Conditions::default();
        assert_eq!(c.clause(), "");
        assert!(c.params().is_empty());
    }
}
