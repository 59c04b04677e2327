//! The fs benchmark suite.
