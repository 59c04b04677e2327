//! The core benchmark suite.
