//! Compile errors of `#[derive(AdvisoryKey)]`: one file per mistake, each
//! with the diagnostic a user sees checked in next to it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
