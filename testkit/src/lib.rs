//! Test harness. OWNER: registry helper.
