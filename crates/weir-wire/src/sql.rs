//! A small SQL lexer for the proxy's cheap looks at query text: fingerprints for
//! `SHOW QUERIES`, the first keyword of each statement and function-call detection
//! for session-feature pinning. It never allocates on the common path and never
//! panics on any input.

mod detect;
mod fast;
mod lex;
mod normalize;
mod shape;
mod swar;

pub use detect::{
    contains_any_call, contains_call, statement_keywords, Keyword, StatementKeywords,
};
pub(crate) use lex::{is_newline, is_space};
pub use lex::{Lexer, Token, TokenKind};
pub use normalize::{fingerprint, normalize, Fingerprint, MAX_NORMALIZED, MAX_SCAN};
pub use shape::same_shape;
pub use swar::contains_either;
