#[test]
fn dump() {
    std::fs::write("/tmp/openapi.json", lis::docs::openapi_json()).unwrap();
    std::fs::write("/tmp/docs.html", lis::docs::docs_html()).unwrap();
}
