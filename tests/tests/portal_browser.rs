//! The patient portal in a real browser: headless Chromium walks the
//! invitation link, activation, the results list, a result's detail,
//! logout and a keyboard-only login, at 360 px and at desktop width, and
//! never sees another patient's results. Screenshots of every page land in
//! `target/portal-screenshots/` (phone-*.png, desktop-*.png).

use std::path::PathBuf;

use tests::portal::World;

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_walks_the_portal_in_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && std::path::Path::new("/usr/bin/chromedriver").exists(),
        "the browser test needs Debian's chromium and chromium-driver (.ci/run installs them)"
    );
    let w = World::start().await;
    for o in [&w.ada_orders[0], &w.ada_orders[1], &w.bob_order] {
        w.wait_released(o).await;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("target/portal-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let shown = [w.ada_orders[0].as_str(), w.ada_orders[1].as_str()].join(",");
    let hidden = [w.ada_orders[2].as_str(), w.bob_order.as_str()].join(",");
    let out = tokio::process::Command::new("python3")
        .arg(root.join("tests/python/portal_browser.py"))
        .env("PORTAL_BASE", &w.stack.base)
        .env(
            "ADA_LINK",
            format!("{}{}", w.stack.base, w.link_of("ada@example.org")),
        )
        .env("ADA_EMAIL", "ada@example.org")
        .env("ADA_PASSWORD", "a long enough password")
        .env("SHOWN_ORDERS", shown)
        .env("HIDDEN_ORDERS", hidden)
        .env("CORRECTED_ORDER", &w.ada_orders[1])
        .env("SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), out)
        .await
        .expect("the browser walk ends within 5 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser walk failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pngs: Vec<String> = std::fs::read_dir(&shots)
        .expect("the screenshots' folder")
        .filter_map(Result::ok)
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 2_000))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pngs.sort();
    for page in ["results", "result", "logged-out", "new-link"] {
        for device in ["phone", "desktop"] {
            let name = format!("{device}-{page}.png");
            assert!(pngs.contains(&name), "{name} in {pngs:?}");
        }
    }
    assert!(pngs.contains(&"phone-activate.png".to_string()));
    assert!(pngs.contains(&"desktop-login.png".to_string()));
    w.stack.stop().await;
}
