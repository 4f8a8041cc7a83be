//! Compile-time behaviour of the attributes: the forms they accept, and the
//! errors (message and span) for misuse.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
