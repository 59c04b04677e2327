//! The echo benchmark suite.
