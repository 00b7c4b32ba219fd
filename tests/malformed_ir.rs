//! Malformed `.sir` files: each file in `tests/malformed/` starts with
//! `# expect: LINE:COL: MESSAGE`, and `smelt dump-ir FILE` must fail with exit code 2
//! and exactly `FILE:LINE:COL: error: MESSAGE` as its first line of stderr.

mod common;

#[test]
fn every_malformed_file_gets_its_diagnostic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "at least 20 malformed inputs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks '# expect:'", file.display()));
        let rel = format!(
            "tests/malformed/{}",
            file.file_name().unwrap().to_str().unwrap()
        );
        let err = common::expect_user_error(&common::smelt(&["dump-ir", &rel]));
        let (loc, msg) = expect.split_at(expect.find(": ").unwrap());
        let want = format!("{rel}:{loc}: error: {}", &msg[2..]);
        let got = err.lines().next().unwrap_or("");
        if got != want {
            failures.push(format!("{rel}\n  want: {want}\n  got:  {got}"));
        }
        assert!(
            err.contains('^'),
            "{rel}: the diagnostic shows a caret:\n{err}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
