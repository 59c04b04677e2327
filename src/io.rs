//! Moving bytes between owned-buffer streams.
