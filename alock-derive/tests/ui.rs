//! Compile errors of `#[derive(AdvisoryKey)]`: one file per mistake, each
//! with the diagnostic a user sees checked in next to it.
//!
//! They live here rather than in the root package because trybuild checks
//! the host package's dependencies and dev-dependencies again, in a target
//! directory of its own: the root's (the harness, the `cli` tool, serde,
//! sqlx's derive) took minutes on a cold build.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
