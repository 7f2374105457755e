//! Placeholder: filled by the manifest work.
