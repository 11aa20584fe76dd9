//! A small SQL lexer for the proxy's cheap looks at query text: fingerprints for
//! `SHOW QUERIES`, the first keyword of each statement and function-call detection
//! for session-feature pinning. It never allocates on the common path and never
//! panics on any input.
