//! ArcQL: the subset of Hypi's query language that depot accepts for listing
//! and searching records.
//!
//! A query is either `*` (everything) or a boolean filter, optionally followed
//! by `SORT key [ASC|DESC], ...`:
//!
//! ```text
//! title ~ 'da vinci' AND (size >= 1024 OR hypi.created IN ['2024', '2025']) SORT size DESC
//! ```
//!
//! Note that `IN` is a *range* test, not set membership: `IN [a, b]` includes
//! both ends and `IN (a, b)` excludes both, as Hypi defines it.
//!
//! [`parse`] turns text into a [`Query`]; [`Query::matches`] and
//! [`Query::compare`] evaluate it against anything that implements [`Record`].

//!
//! The parser is in `parser.rs`, evaluation in `eval.rs`, the linear-time wildcard matcher in
//! `glob.rs` and the tests in `tests.rs`.

use std::fmt;

mod eval;
pub mod glob;
mod parser;
#[cfg(test)]
mod tests;

pub use eval::{FieldTerms, Matcher};
pub use parser::parse;

/// Longest query accepted, in bytes; keeps parse and evaluation cost bounded
/// for queries that arrive from untrusted clients.
pub const MAX_QUERY_LEN: usize = 4096;

/// Deepest parenthesis nesting accepted; the parser recurses once per level,
/// so this is what guarantees it can never exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// A literal written in a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A single-quoted string, with its escapes already resolved.
    Str(String),
    /// A number such as `42`, `-3` or `2.5`.
    Num(f64),
}

/// A record's value at some path, as returned by [`Record::field`].
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// Text.
    Str(String),
    /// A number; compared numerically only against numeric literals.
    Num(f64),
    /// A flag; compared as the text `"true"` or `"false"`.
    Bool(bool),
}

/// Anything a query can be evaluated against.
pub trait Record {
    /// The value at a dotted `path` such as `hypi.id`, or `None` when the
    /// record has no such field.
    fn field(&self, path: &str) -> Option<Field>;
}

/// The operator of an [`Expr::Cmp`] term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`; also true when the field is absent.
    Ne,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `~`: the value's words occur consecutively among the field's words,
    /// ignoring case.
    Words,
    /// `^`: the field starts with the value (case-sensitive).
    Prefix,
    /// `*`: the whole field matches a pattern where `*` is any run of
    /// characters and `?` exactly one (case-sensitive).
    Wildcard,
}

/// A filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both sides match. Chains are left-associative: `a AND b AND c` is
    /// `And(And(a, b), c)`. A query of [`MAX_QUERY_LEN`] bytes can chain
    /// about 680 terms, so code that walks an `Expr` recursively must allow
    /// for that depth on its left side.
    And(Box<Expr>, Box<Expr>),
    /// Either side matches. Binds looser than `And`; left-associative.
    Or(Box<Expr>, Box<Expr>),
    /// `path op value`.
    Cmp {
        /// Dotted field path.
        path: String,
        /// The comparison.
        op: CmpOp,
        /// The literal compared against.
        value: Value,
    },
    /// `path IN [lo, hi]` (inclusive) or `path IN (lo, hi)` (exclusive).
    Range {
        /// Dotted field path.
        path: String,
        /// Lower bound.
        lo: Value,
        /// Upper bound.
        hi: Value,
        /// `true` for `[..]`, `false` for `(..)`; applies to both ends.
        inclusive: bool,
    },
    /// `EXIST path`
    Exist(String),
    /// `NOT EXIST path`
    NotExist(String),
}

/// Sort direction of a [`SortKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first; the default when a key names no direction.
    Desc,
}

/// One key of a `SORT` clause.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortKey {
    /// Dotted field path.
    pub path: String,
    /// Direction for this key.
    pub dir: Direction,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The filter, or `None` for `*`, which matches every record.
    pub filter: Option<Expr>,
    /// Sort keys in priority order; empty when there is no `SORT` clause.
    pub sort: Vec<SortKey>,
}

/// Why a query was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 0-based byte offset into the query where the problem was found.
    pub position: usize,
    /// Human-readable description, without the position.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.message, self.position)
    }
}

impl std::error::Error for ParseError {}
