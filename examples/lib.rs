//! The examples of [openedx-events](https://github.com/openedx/openedx-events-rs), as a
//! package of their own so that running one compiles only what it needs.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! This library is empty: cargo needs a target besides the examples to build the package.
