//! Compile-time mistakes: each file under tests/ui is one mistake, with the
//! message the user must see in the matching .stderr file.

#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ui/*.rs"));
}
