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

use std::cmp::Ordering;
use std::fmt;

use winnow::ascii::{digit1, multispace0, Caseless};
use winnow::combinator::{alt, eof, not, opt, peek, preceded, repeat, separated, terminated};
use winnow::error::{ErrMode, ModalResult, ParserError};
use winnow::stream::{LocatingSlice, Location};
use winnow::token::{any, one_of, take_till, take_while};
use winnow::Parser;

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

/// Parses an ArcQL query.
///
/// Errors carry the byte offset of the offending token, so a client can point
/// at it.
pub fn parse(input: &str) -> Result<Query, ParseError> {
    if input.len() > MAX_QUERY_LEN {
        return Err(ParseError {
            position: MAX_QUERY_LEN,
            message: format!(
                "query is {} bytes long; the limit is {MAX_QUERY_LEN}",
                input.len()
            ),
        });
    }
    if input.trim_ascii().is_empty() {
        return Err(ParseError {
            position: 0,
            message: "empty query".to_string(),
        });
    }
    let mut stream = LocatingSlice::new(input);
    query.parse_next(&mut stream).map_err(|e| {
        let fail = match e {
            ErrMode::Backtrack(f) | ErrMode::Cut(f) => f,
            // Unreachable for a complete (non-partial) stream, but a
            // position is still better than a panic.
            ErrMode::Incomplete(_) => Fail::from_input(&stream),
        };
        ParseError {
            position: fail.pos.min(input.len()),
            message: fail.msg.unwrap_or_else(|| "unexpected input".to_string()),
        }
    })
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

type In<'a> = LocatingSlice<&'a str>;
type PResult<T> = ModalResult<T, Fail>;

/// winnow error type: only a position and, once a parser has committed, a
/// message. winnow's `ContextError` reports where the input was left on
/// failure, which after backtracking is often not the token at fault; owning
/// the error lets every message point at the token it talks about.
#[derive(Debug, Clone, PartialEq)]
struct Fail {
    pos: usize,
    msg: Option<String>,
}

impl<'a> ParserError<In<'a>> for Fail {
    type Inner = Self;

    fn from_input(input: &In<'a>) -> Self {
        Fail {
            pos: input.current_token_start(),
            msg: None,
        }
    }

    // winnow's default panics in debug builds on a combinator misuse; a query
    // service must answer with an error instead, whatever the build.
    fn assert(input: &In<'a>, message: &'static str) -> Self {
        Fail {
            pos: input.current_token_start(),
            msg: Some(format!("internal parser error: {message}")),
        }
    }

    fn or(self, other: Self) -> Self {
        // The alternative that got further is the one the user most likely
        // meant.
        if other.pos >= self.pos {
            other
        } else {
            self
        }
    }

    fn into_inner(self) -> Result<Self::Inner, Self> {
        Ok(self)
    }
}

/// A committed failure: no other alternative may be tried after it.
fn cut<T>(pos: usize, msg: impl Into<String>) -> PResult<T> {
    Err(ErrMode::Cut(Fail {
        pos,
        msg: Some(msg.into()),
    }))
}

/// Runs `p`; if it does not match, commits to an `expected {what}` error at the
/// position where `p` started.
fn expect<'a, O>(
    what: impl fmt::Display,
    mut p: impl Parser<In<'a>, O, ErrMode<Fail>>,
) -> impl Parser<In<'a>, O, ErrMode<Fail>> {
    move |i: &mut In<'a>| {
        let pos = i.current_token_start();
        p.parse_next(i).or_else(|e| {
            if e.is_backtrack() {
                cut(pos, format!("expected {what}"))
            } else {
                Err(e)
            }
        })
    }
}

fn ws(i: &mut In<'_>) -> PResult<()> {
    multispace0.void().parse_next(i)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A case-insensitive keyword that is not just the start of a longer
/// identifier or path (`ORDER` is not `OR`, `exist.x` is a path).
fn keyword<'a>(kw: &'static str) -> impl Parser<In<'a>, (), ErrMode<Fail>> {
    terminated(
        Caseless(kw),
        not(one_of(|c: char| is_ident_char(c) || c == '.')),
    )
    .void()
}

fn ident<'a>(i: &mut In<'a>) -> PResult<&'a str> {
    (one_of(is_ident_start), take_while(0.., is_ident_char))
        .take()
        .parse_next(i)
}

fn path(i: &mut In<'_>) -> PResult<String> {
    (
        ident,
        repeat::<_, _, (), _, _>(0.., preceded('.', expect("an identifier after '.'", ident))),
    )
        .take()
        .map(str::to_string)
        .parse_next(i)
}

/// A path where one is required, with a specific message for the common
/// mistake of starting it with a digit.
fn required_path(i: &mut In<'_>, what: &str) -> PResult<String> {
    let pos = i.current_token_start();
    if opt(peek(one_of(|c: char| c.is_ascii_digit())))
        .parse_next(i)?
        .is_some()
    {
        return cut(pos, "a path cannot start with a digit");
    }
    expect(what, path).parse_next(i)
}

fn string_lit(i: &mut In<'_>) -> PResult<String> {
    let start = i.current_token_start();
    '\''.parse_next(i)?;
    let escape = move |i: &mut In<'_>| -> PResult<char> {
        let backslash = i.current_token_start().saturating_sub(1);
        match opt(any).parse_next(i)? {
            Some(c @ ('\'' | '\\')) => Ok(c),
            Some(c) => cut(
                backslash,
                format!("unknown escape '\\{c}' in string (only \\' and \\\\ are allowed)"),
            ),
            None => cut(start, "unterminated string"),
        }
    };
    let body: String =
        winnow::ascii::escaped(take_till(1.., ['\'', '\\']), '\\', escape).parse_next(i)?;
    if opt('\'').parse_next(i)?.is_none() {
        return cut(start, "unterminated string");
    }
    Ok(body)
}

fn number(i: &mut In<'_>) -> PResult<f64> {
    let start = i.current_token_start();
    let text = (
        opt('-'),
        digit1,
        opt(('.', expect("a digit after '.'", digit1))),
    )
        .take()
        .parse_next(i)?;
    match text.parse::<f64>() {
        Ok(n) => Ok(n),
        // The grammar above only admits valid float syntax; this is a guard,
        // not an expected path.
        Err(_) => cut(start, format!("invalid number '{text}'")),
    }
}

fn value(i: &mut In<'_>) -> PResult<Value> {
    alt((string_lit.map(Value::Str), number.map(Value::Num))).parse_next(i)
}

fn range(i: &mut In<'_>, path: String) -> PResult<Expr> {
    ws(i)?;
    let open = expect("'[' or '(' after IN", one_of(['[', '('])).parse_next(i)?;
    ws(i)?;
    let lo = expect(format!("a value after '{open}'"), value).parse_next(i)?;
    ws(i)?;
    expect("',' between the two bounds of IN", ',').parse_next(i)?;
    ws(i)?;
    let hi = expect("a value after ','", value).parse_next(i)?;
    ws(i)?;
    let close_pos = i.current_token_start();
    if opt(peek(',')).parse_next(i)?.is_some() {
        return cut(
            close_pos,
            "IN takes exactly two bounds: it is a range, not a set",
        );
    }
    let close = expect("']' or ')' to close the range", one_of([']', ')'])).parse_next(i)?;
    let inclusive = open == '[';
    let wanted = if inclusive { ']' } else { ')' };
    if close != wanted {
        return cut(
            close_pos,
            format!("range opened with '{open}' must be closed with '{wanted}'"),
        );
    }
    Ok(Expr::Range {
        path,
        lo,
        hi,
        inclusive,
    })
}

fn term(i: &mut In<'_>) -> PResult<Expr> {
    // A bare `exist` or `not` starting a term is always the keyword, never a
    // field of that name; that is what lets `NOT EXIST` and a missing path
    // produce precise errors.
    if opt(keyword("exist")).parse_next(i)?.is_some() {
        ws(i)?;
        return required_path(i, "a path after EXIST").map(Expr::Exist);
    }
    if opt(keyword("not")).parse_next(i)?.is_some() {
        ws(i)?;
        expect("EXIST after NOT", keyword("exist")).parse_next(i)?;
        ws(i)?;
        return required_path(i, "a path after NOT EXIST").map(Expr::NotExist);
    }
    let path = required_path(i, "a path, EXIST, NOT EXIST or '('")?;
    ws(i)?;
    if opt(keyword("in")).parse_next(i)?.is_some() {
        return range(i, path);
    }
    let op_pos = i.current_token_start();
    // Take the whole run of operator characters so that `==` or `=<` is
    // reported as an unknown operator rather than as a bad value.
    let op_text = expect(
        format!("an operator after '{path}'"),
        take_while(1.., ['=', '!', '<', '>', '~', '^', '*']),
    )
    .parse_next(i)?;
    let op = match op_text {
        "=" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        ">" => CmpOp::Gt,
        "<=" => CmpOp::Le,
        ">=" => CmpOp::Ge,
        "~" => CmpOp::Words,
        "^" => CmpOp::Prefix,
        "*" => CmpOp::Wildcard,
        other => return cut(op_pos, format!("unknown operator '{other}'")),
    };
    ws(i)?;
    let value = expect(format!("a value after '{op_text}'"), value).parse_next(i)?;
    Ok(Expr::Cmp { path, op, value })
}

// The three functions below are the only ones on the recursion path for
// parentheses. They pass `Box<Expr>` around, which the tree needs anyway, and
// leave winnow's parser values to small leaf helpers, because a debug build
// gives every temporary its own stack slot: this cuts the stack a nesting level
// costs there from about 7 KiB to under 3 KiB.

fn primary(i: &mut In<'_>, depth: usize) -> PResult<Box<Expr>> {
    ws(i)?;
    let pos = i.current_token_start();
    if !eat_char(i, '(')? {
        return boxed_term(i);
    }
    if depth >= MAX_DEPTH {
        return too_deep(pos);
    }
    let e = or_expr(i, depth + 1)?;
    close_paren(i)?;
    Ok(e)
}

/// `primary {AND primary}`, folded left.
fn and_expr(i: &mut In<'_>, depth: usize) -> PResult<Box<Expr>> {
    let mut acc = primary(i, depth)?;
    while eat_keyword(i, "and")? {
        acc = Box::new(Expr::And(acc, primary(i, depth)?));
    }
    Ok(acc)
}

/// `and_expr {OR and_expr}`, folded left.
fn or_expr(i: &mut In<'_>, depth: usize) -> PResult<Box<Expr>> {
    let mut acc = and_expr(i, depth)?;
    while eat_keyword(i, "or")? {
        acc = Box::new(Expr::Or(acc, and_expr(i, depth)?));
    }
    Ok(acc)
}

#[inline(never)]
fn boxed_term(i: &mut In<'_>) -> PResult<Box<Expr>> {
    term(i).map(Box::new)
}

/// Consumes optional whitespace and the keyword if both are there.
#[inline(never)]
fn eat_keyword(i: &mut In<'_>, kw: &'static str) -> PResult<bool> {
    Ok(opt((ws, keyword(kw))).parse_next(i)?.is_some())
}

#[inline(never)]
fn eat_char(i: &mut In<'_>, c: char) -> PResult<bool> {
    Ok(opt(c).parse_next(i)?.is_some())
}

#[inline(never)]
fn close_paren(i: &mut In<'_>) -> PResult<()> {
    ws(i)?;
    expect("')'", ')').void().parse_next(i)
}

#[inline(never)]
fn too_deep(pos: usize) -> PResult<Box<Expr>> {
    cut(
        pos,
        format!("parentheses nested deeper than {MAX_DEPTH} levels"),
    )
}

fn sort_key(i: &mut In<'_>) -> PResult<SortKey> {
    ws(i)?;
    let path = required_path(i, "a path to sort by")?;
    let dir = opt(preceded(
        ws,
        alt((
            keyword("asc").value(Direction::Asc),
            keyword("desc").value(Direction::Desc),
        )),
    ))
    .parse_next(i)?
    .unwrap_or(Direction::Desc);
    Ok(SortKey { path, dir })
}

fn sort_clause(i: &mut In<'_>) -> PResult<Vec<SortKey>> {
    preceded((ws, keyword("sort")), separated(1.., sort_key, (ws, ','))).parse_next(i)
}

fn query(i: &mut In<'_>) -> PResult<Query> {
    ws(i)?;
    let filter = if opt('*').parse_next(i)?.is_some() {
        None
    } else {
        Some(*or_expr(i, 0)?)
    };
    let sort = opt(sort_clause).parse_next(i)?;
    ws(i)?;
    let end_pos = i.current_token_start();
    if opt(eof).parse_next(i)?.is_none() {
        let what = match (&filter, &sort) {
            (_, Some(_)) => "expected ',' or end of query after the sort keys",
            (None, None) => "expected SORT or end of query after '*'",
            (Some(_), None) => "expected AND, OR, SORT or end of query",
        };
        return cut(end_pos, what);
    }
    Ok(Query {
        filter,
        sort: sort.unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// The text form used whenever a comparison is not number against number;
/// `Display` for `f64` never uses exponents, so `10` is `"10"` and `2.5` is
/// `"2.5"`.
fn field_text(f: &Field) -> String {
    match f {
        Field::Str(s) => s.clone(),
        Field::Num(n) => n.to_string(),
        Field::Bool(b) => b.to_string(),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Num(n) => n.to_string(),
    }
}

/// `None` only for a NaN field, which is then unequal and unordered.
fn cmp_field_value(f: &Field, v: &Value) -> Option<Ordering> {
    match (f, v) {
        (Field::Num(a), Value::Num(b)) => a.partial_cmp(b),
        _ => Some(field_text(f).cmp(&value_text(v))),
    }
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn words_match(field: &str, phrase: &str) -> bool {
    let needle = words(phrase);
    if needle.is_empty() {
        // A phrase with no words would otherwise match every record, which
        // is never what a search box meant.
        return false;
    }
    words(field).windows(needle.len()).any(|w| w == needle)
}

/// Glob match with `*` and `?`. The greedy algorithm with a single backtrack
/// point is O(len(text) * len(pattern)) at worst, unlike naive recursion,
/// which is exponential on patterns like `*a*a*a*b`.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Pattern index just after the last `*`, and the text index it resumes at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                pi += 1;
                star = Some((pi, ti));
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    // Let the last `*` swallow one more character and retry.
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn eval_leaf<R: Record>(e: &Expr, r: &R) -> bool {
    match e {
        Expr::Exist(path) => r.field(path).is_some(),
        Expr::NotExist(path) => r.field(path).is_none(),
        Expr::Cmp { path, op, value } => {
            let Some(f) = r.field(path) else {
                return *op == CmpOp::Ne;
            };
            let ord = cmp_field_value(&f, value);
            match op {
                CmpOp::Eq => ord == Some(Ordering::Equal),
                CmpOp::Ne => ord != Some(Ordering::Equal),
                CmpOp::Lt => ord == Some(Ordering::Less),
                CmpOp::Gt => ord == Some(Ordering::Greater),
                CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                CmpOp::Words => words_match(&field_text(&f), &value_text(value)),
                CmpOp::Prefix => field_text(&f).starts_with(&value_text(value)),
                CmpOp::Wildcard => wildcard_match(&value_text(value), &field_text(&f)),
            }
        }
        Expr::Range {
            path,
            lo,
            hi,
            inclusive,
        } => {
            let Some(f) = r.field(path) else {
                return false;
            };
            let (Some(above), Some(below)) = (cmp_field_value(&f, lo), cmp_field_value(&f, hi))
            else {
                return false;
            };
            if *inclusive {
                above != Ordering::Less && below != Ordering::Greater
            } else {
                above == Ordering::Greater && below == Ordering::Less
            }
        }
        // Callers only pass leaves.
        Expr::And(..) | Expr::Or(..) => false,
    }
}

/// Walks left spines iteratively: parsed chains are left-deep and can be
/// hundreds of terms long, while right children only nest as deep as the
/// parentheses (at most [`MAX_DEPTH`]).
fn eval<R: Record>(mut e: &Expr, r: &R) -> bool {
    loop {
        match e {
            Expr::And(l, rt) => {
                if !eval(rt, r) {
                    return false;
                }
                e = l;
            }
            Expr::Or(l, rt) => {
                if eval(rt, r) {
                    return true;
                }
                e = l;
            }
            leaf => return eval_leaf(leaf, r),
        }
    }
}

/// Total order for sorting: numbers numerically (NaN last among them), then
/// everything else by its text form. Mixed number/text pairs are ranked by
/// kind rather than compared as text because text order and numeric order
/// disagree (`10 < 9.5` as text), which would make the order cyclic, and
/// `slice::sort_by` may panic on a comparator that is not a total order.
fn cmp_fields(a: &Field, b: &Field) -> Ordering {
    match (a, b) {
        (Field::Num(x), Field::Num(y)) => match (x.is_nan(), y.is_nan()) {
            (false, false) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            (xn, yn) => xn.cmp(&yn),
        },
        (Field::Num(_), _) => Ordering::Less,
        (_, Field::Num(_)) => Ordering::Greater,
        _ => field_text(a).cmp(&field_text(b)),
    }
}

impl Query {
    /// Whether `r` passes the filter; always true for `*`.
    pub fn matches(&self, r: &impl Record) -> bool {
        self.filter.as_ref().is_none_or(|e| eval(e, r))
    }

    /// Orders two records by the sort keys, for use with `sort_by`.
    ///
    /// Absent values sort last whatever the direction, so records lacking the
    /// key never crowd out real ones at the top of a page. Numbers compare
    /// numerically, other values by text, and numbers come before text when
    /// a key holds both.
    pub fn compare(&self, a: &impl Record, b: &impl Record) -> Ordering {
        self.compare_keys(&self.sort_key(a), &self.sort_key(b))
    }

    /// The values `r` has at the sort keys, computed once per record so that sorting many
    /// records does not look every field up again on each comparison.
    pub fn sort_key(&self, r: &impl Record) -> Vec<Option<Field>> {
        self.sort.iter().map(|k| r.field(&k.path)).collect()
    }

    /// [`Query::compare`] over keys from [`Query::sort_key`].
    pub fn compare_keys(&self, a: &[Option<Field>], b: &[Option<Field>]) -> Ordering {
        for ((key, x), y) in self.sort.iter().zip(a).zip(b) {
            let ord = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => match key.dir {
                    Direction::Asc => cmp_fields(x, y),
                    Direction::Desc => cmp_fields(y, x),
                },
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// Every path the query mentions (filter and sort), so a caller can
    /// reject unknown paths. Each path appears once, in order of first
    /// mention.
    pub fn paths(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        // An explicit stack rather than recursion: see `eval`.
        let mut stack: Vec<&Expr> = self.filter.iter().collect();
        while let Some(e) = stack.pop() {
            let p = match e {
                Expr::And(l, r) | Expr::Or(l, r) => {
                    // Right first so the left side is visited first.
                    stack.push(r);
                    stack.push(l);
                    continue;
                }
                Expr::Cmp { path, .. } | Expr::Range { path, .. } => path,
                Expr::Exist(path) | Expr::NotExist(path) => path,
            };
            if !out.contains(&p.as_str()) {
                out.push(p);
            }
        }
        for key in &self.sort {
            if !out.contains(&key.path.as_str()) {
                out.push(&key.path);
            }
        }
        out
    }

    /// If the filter is, or is AND-ed (at any depth) with, `path = 'v'` for
    /// this `path`, returns `v`, so a caller can narrow candidates with an
    /// index. The caller must still apply [`Query::matches`] to the
    /// candidates: the rest of the filter is not reflected here, and `=` also
    /// matches non-text fields whose text form equals `v`. Numeric equalities
    /// and terms under an OR are never returned; of several matching terms
    /// the leftmost wins.
    pub fn equality_on(&self, path: &str) -> Option<&str> {
        let mut stack: Vec<&Expr> = self.filter.iter().collect();
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(l, r) => {
                    stack.push(r);
                    stack.push(l);
                }
                Expr::Cmp {
                    path: p,
                    op: CmpOp::Eq,
                    value: Value::Str(v),
                } if p == path => return Some(v),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // ---- helpers ----------------------------------------------------------

    fn s(v: &str) -> Value {
        Value::Str(v.to_string())
    }

    fn n(v: f64) -> Value {
        Value::Num(v)
    }

    fn cmp(path: &str, op: CmpOp, value: Value) -> Expr {
        Expr::Cmp {
            path: path.to_string(),
            op,
            value,
        }
    }

    fn range(path: &str, lo: Value, hi: Value, inclusive: bool) -> Expr {
        Expr::Range {
            path: path.to_string(),
            lo,
            hi,
            inclusive,
        }
    }

    fn and(l: Expr, r: Expr) -> Expr {
        Expr::And(Box::new(l), Box::new(r))
    }

    fn or(l: Expr, r: Expr) -> Expr {
        Expr::Or(Box::new(l), Box::new(r))
    }

    fn key(path: &str, dir: Direction) -> SortKey {
        SortKey {
            path: path.to_string(),
            dir,
        }
    }

    fn filter(e: Expr) -> Query {
        Query {
            filter: Some(e),
            sort: vec![],
        }
    }

    fn sorted(filter: Option<Expr>, sort: Vec<SortKey>) -> Query {
        Query { filter, sort }
    }

    #[derive(Debug, Default)]
    struct Rec(HashMap<String, Field>);

    impl Record for Rec {
        fn field(&self, path: &str) -> Option<Field> {
            self.0.get(path).cloned()
        }
    }

    fn rec(fields: &[(&str, Field)]) -> Rec {
        Rec(fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect())
    }

    fn fs(v: &str) -> Field {
        Field::Str(v.to_string())
    }

    // ---- parsing ----------------------------------------------------------

    #[test]
    fn parse_ok_table() {
        use CmpOp::*;
        use Direction::*;
        let cases: Vec<(&str, Query)> = vec![
            ("*", sorted(None, vec![])),
            ("  *\t\n", sorted(None, vec![])),
            ("* SORT a", sorted(None, vec![key("a", Desc)])),
            ("a = 'x'", filter(cmp("a", Eq, s("x")))),
            ("a != 'x'", filter(cmp("a", Ne, s("x")))),
            ("a < 1", filter(cmp("a", Lt, n(1.0)))),
            ("a > 1", filter(cmp("a", Gt, n(1.0)))),
            ("a <= 1", filter(cmp("a", Le, n(1.0)))),
            ("a >= -2.5", filter(cmp("a", Ge, n(-2.5)))),
            ("a<=-1.5", filter(cmp("a", Le, n(-1.5)))),
            ("a = 007", filter(cmp("a", Eq, n(7.0)))),
            ("a ~ 'da vinci'", filter(cmp("a", Words, s("da vinci")))),
            ("a ^ 'The'", filter(cmp("a", Prefix, s("The")))),
            ("a * 'pa?t*'", filter(cmp("a", Wildcard, s("pa?t*")))),
            ("a IN [1, 2]", filter(range("a", n(1.0), n(2.0), true))),
            ("a IN (1, 2)", filter(range("a", n(1.0), n(2.0), false))),
            ("a in(1,2)", filter(range("a", n(1.0), n(2.0), false))),
            (
                "title IN ['Da Vinci Code', 'Inferno']",
                filter(range("title", s("Da Vinci Code"), s("Inferno"), true)),
            ),
            ("EXIST hypi.id", filter(Expr::Exist("hypi.id".into()))),
            (
                "NOT EXIST hypi.created",
                filter(Expr::NotExist("hypi.created".into())),
            ),
            (
                "exist a AND Not Exist b",
                filter(and(Expr::Exist("a".into()), Expr::NotExist("b".into()))),
            ),
            ("_x.y_1.z9 = 1", filter(cmp("_x.y_1.z9", Eq, n(1.0)))),
            (r"a = 'it\'s \\ ok'", filter(cmp("a", Eq, s(r"it's \ ok")))),
            ("a = ''", filter(cmp("a", Eq, s("")))),
            ("a = 'é ✓'", filter(cmp("a", Eq, s("é ✓")))),
            // AND binds tighter than OR, on either side.
            (
                "a=1 OR b=2 AND c=3",
                filter(or(
                    cmp("a", Eq, n(1.0)),
                    and(cmp("b", Eq, n(2.0)), cmp("c", Eq, n(3.0))),
                )),
            ),
            (
                "a=1 AND b=2 OR c=3",
                filter(or(
                    and(cmp("a", Eq, n(1.0)), cmp("b", Eq, n(2.0))),
                    cmp("c", Eq, n(3.0)),
                )),
            ),
            (
                "(a=1 OR b=2) AND c=3",
                filter(and(
                    or(cmp("a", Eq, n(1.0)), cmp("b", Eq, n(2.0))),
                    cmp("c", Eq, n(3.0)),
                )),
            ),
            // Chains are left-associative.
            (
                "a=1 AND b=2 AND c=3",
                filter(and(
                    and(cmp("a", Eq, n(1.0)), cmp("b", Eq, n(2.0))),
                    cmp("c", Eq, n(3.0)),
                )),
            ),
            (
                "a=1 or b=2 OR c=3",
                filter(or(
                    or(cmp("a", Eq, n(1.0)), cmp("b", Eq, n(2.0))),
                    cmp("c", Eq, n(3.0)),
                )),
            ),
            ("((a = 1))", filter(cmp("a", Eq, n(1.0)))),
            (
                "a='x'AND(b=1)",
                filter(and(cmp("a", Eq, s("x")), cmp("b", Eq, n(1.0)))),
            ),
            (
                "a = 1 SORT b, c ASC, d DESC",
                sorted(
                    Some(cmp("a", Eq, n(1.0))),
                    vec![key("b", Desc), key("c", Asc), key("d", Desc)],
                ),
            ),
            (
                "a=1 and b=2 Or c=3 sort x asc,y Desc",
                sorted(
                    Some(or(
                        and(cmp("a", Eq, n(1.0)), cmp("b", Eq, n(2.0))),
                        cmp("c", Eq, n(3.0)),
                    )),
                    vec![key("x", Asc), key("y", Desc)],
                ),
            ),
            // Keywords other than EXIST/NOT are only keywords where they can
            // appear, so fields may be named after them.
            ("and = 1", filter(cmp("and", Eq, n(1.0)))),
            ("in IN [1, 2]", filter(range("in", n(1.0), n(2.0), true))),
            (
                "sort = 1 SORT sort asc, desc",
                sorted(
                    Some(cmp("sort", Eq, n(1.0))),
                    vec![key("sort", Asc), key("desc", Desc)],
                ),
            ),
            ("notes = 1", filter(cmp("notes", Eq, n(1.0)))),
            ("existing = 1", filter(cmp("existing", Eq, n(1.0)))),
            ("exist.x = 1", filter(cmp("exist.x", Eq, n(1.0)))),
            ("EXIST not.exist", filter(Expr::Exist("not.exist".into()))),
        ];
        for (q, want) in cases {
            assert_eq!(parse(q), Ok(want), "query {q:?}");
        }
    }

    #[test]
    fn parse_err_table() {
        let nested_ok = format!("{}a=1{}", "(".repeat(64), ")".repeat(64));
        assert!(parse(&nested_ok).is_ok());
        let nested_bad = format!("{}a=1{}", "(".repeat(65), ")".repeat(65));
        let unclosed_flood = "(".repeat(4000);
        let too_long = format!("a = '{}'", "x".repeat(MAX_QUERY_LEN));

        let cases: Vec<(&str, usize, &str)> = vec![
            ("", 0, "empty query"),
            (" \t\n ", 0, "empty query"),
            ("hypi.id =", 9, "expected a value after '=' at 9"),
            ("a = ", 4, "expected a value after '='"),
            ("a ~", 3, "expected a value after '~'"),
            ("a = -", 4, "expected a value after '='"),
            ("a = .5", 4, "expected a value after '='"),
            ("a = \"x\"", 4, "expected a value after '='"),
            ("a = 1.", 6, "expected a digit after '.'"),
            // trailing garbage
            ("a = 1 b", 6, "expected AND, OR, SORT or end of query"),
            ("a = 1 )", 6, "expected AND, OR, SORT or end of query"),
            ("a=1 ORDER", 4, "expected AND, OR, SORT or end of query"),
            ("* x", 2, "expected SORT or end of query after '*'"),
            ("* AND a = 1", 2, "expected SORT or end of query after '*'"),
            (
                "a = 1 SORT b asc c",
                17,
                "expected ',' or end of query after the sort keys",
            ),
            // unterminated strings
            ("a = 'abc", 4, "unterminated string"),
            ("a = 'abc\\", 4, "unterminated string"),
            ("a = 'abc\\'", 4, "unterminated string"),
            (
                "a IN ['x, 'y']",
                11,
                "expected ',' between the two bounds of IN",
            ),
            (
                "a = 'x\\n'",
                6,
                "unknown escape '\\n' in string (only \\' and \\\\ are allowed)",
            ),
            // unknown operators
            ("a == 1", 2, "unknown operator '=='"),
            ("a <> 1", 2, "unknown operator '<>'"),
            ("a =~ 'x'", 2, "unknown operator '=~'"),
            ("a % 1", 2, "expected an operator after 'a'"),
            ("a", 1, "expected an operator after 'a'"),
            ("a . b = 1", 2, "expected an operator after 'a'"),
            // IN
            (
                "a IN [1, 2)",
                10,
                "range opened with '[' must be closed with ']'",
            ),
            (
                "a IN (1, 2]",
                10,
                "range opened with '(' must be closed with ')'",
            ),
            (
                "a IN [1, 2, 3]",
                10,
                "IN takes exactly two bounds: it is a range, not a set",
            ),
            ("a IN [1]", 7, "expected ',' between the two bounds of IN"),
            ("a IN [1 2]", 8, "expected ',' between the two bounds of IN"),
            ("a IN [, 2]", 6, "expected a value after '['"),
            ("a IN [1, ]", 9, "expected a value after ','"),
            ("a IN [1, 2", 10, "expected ']' or ')' to close the range"),
            ("a IN 1", 5, "expected '[' or '(' after IN"),
            // paths
            ("1a = 2", 0, "a path cannot start with a digit"),
            ("a = 1 AND 2b = 3", 10, "a path cannot start with a digit"),
            ("EXIST 9a", 6, "a path cannot start with a digit"),
            ("* SORT 1a", 7, "a path cannot start with a digit"),
            ("a.1 = 2", 2, "expected an identifier after '.'"),
            ("a. = 2", 2, "expected an identifier after '.'"),
            ("é = 1", 0, "expected a path, EXIST, NOT EXIST or '('"),
            // structure
            ("(a = 1", 6, "expected ')'"),
            ("()", 1, "expected a path, EXIST, NOT EXIST or '('"),
            ("a = 1 AND", 9, "expected a path, EXIST, NOT EXIST or '('"),
            ("a = 1 OR", 8, "expected a path, EXIST, NOT EXIST or '('"),
            ("a = 1 AND OR b = 1", 13, "expected an operator after 'OR'"),
            ("NOT a", 4, "expected EXIST after NOT"),
            ("EXIST", 5, "expected a path after EXIST"),
            ("NOT EXIST", 9, "expected a path after NOT EXIST"),
            ("a = 1 SORT", 10, "expected a path to sort by"),
            ("a = 1 SORT b,", 13, "expected a path to sort by"),
            ("* SORT", 6, "expected a path to sort by"),
            // limits
            (&nested_bad, 64, "parentheses nested deeper than 64 levels"),
            (
                &unclosed_flood,
                64,
                "parentheses nested deeper than 64 levels",
            ),
            (&too_long, MAX_QUERY_LEN, "the limit is 4096"),
        ];
        for (q, pos, msg) in cases {
            let err = parse(q).expect_err(q);
            assert_eq!(err.position, pos, "position for {q:?}: {err}");
            assert!(
                err.to_string().contains(msg),
                "message for {q:?}: got {err:?}, want {msg:?}"
            );
        }
    }

    #[test]
    fn error_display_and_trait() {
        let err = parse("hypi.id =").unwrap_err();
        assert_eq!(err.to_string(), "expected a value after '=' at 9");
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().ends_with("at 9"));
    }

    #[test]
    fn length_limit_is_inclusive() {
        let q = format!("a = '{}'", "x".repeat(MAX_QUERY_LEN - 6));
        assert_eq!(q.len(), MAX_QUERY_LEN);
        assert!(parse(&q).is_ok());
    }

    /// The longest chains that fit in a query build left-deep trees hundreds
    /// of levels deep, and the deepest nesting recurses through the parser 64
    /// times; everything that walks either must cope on a small stack.
    #[test]
    fn limits_fit_on_a_small_stack() {
        let max_chain = |first: &str, seg: &str| {
            format!(
                "{first}{}",
                seg.repeat((MAX_QUERY_LEN - first.len()) / seg.len())
            )
        };
        let queries = vec![
            max_chain("a=1", "OR a=2"),
            max_chain("a=1", " AND(a=1)"),
            format!("{}a=1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH)),
        ];
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let r = rec(&[("a", Field::Num(1.0))]);
                for q in queries {
                    assert!(q.len() <= MAX_QUERY_LEN);
                    let parsed = parse(&q).expect("query at the limits parses");
                    assert!(parsed.matches(&r));
                    assert_eq!(parsed.paths(), vec!["a"]);
                    assert_eq!(parsed.equality_on("a"), None);
                    let copy = parsed.clone();
                    assert_eq!(copy, parsed);
                    assert!(!format!("{parsed:?}").is_empty());
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A quarter of the 2 MiB that Rust and tokio give spawned threads.
    const STACK: usize = 512 * 1024;

    // ---- evaluation -------------------------------------------------------

    fn sample() -> Rec {
        rec(&[
            ("title", fs("The Da Vinci Code")),
            ("size", Field::Num(1500.0)),
            ("public", Field::Bool(true)),
            ("hypi.id", fs("01ABC")),
            ("name", fs("report-2024.PDF")),
            ("version", fs("10")),
            ("nan", Field::Num(f64::NAN)),
        ])
    }

    fn check(r: &Rec, cases: &[(&str, bool)]) {
        for (q, want) in cases {
            let query = parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
            assert_eq!(query.matches(r), *want, "query {q:?}");
        }
    }

    #[test]
    fn eval_comparisons() {
        check(
            &sample(),
            &[
                ("hypi.id = '01ABC'", true),
                ("hypi.id = '01abc'", false),
                ("hypi.id != '01ABC'", false),
                ("hypi.id != 'zzz'", true),
                ("size = 1500", true),
                ("size = 1500.0", true),
                ("size != 1500", false),
                ("size < 1501", true),
                ("size < 1500", false),
                ("size <= 1500", true),
                ("size > 1499.5", true),
                ("size > 1500", false),
                ("size >= 1500", true),
                // Numeric, not textual: as text "1500" < "9".
                ("size < 9", false),
                // Number field against a string literal: compared as text.
                ("size = '1500'", true),
                ("size < '9'", true),
                ("size > '2'", false),
                // String field against a number literal: also text.
                ("version = 10", true),
                ("version < 9", true),
                ("version > 9", false),
                ("public = 'true'", true),
                ("public != 'false'", true),
                ("public < 'u'", true),
                ("title > 'A' AND title < 'U'", true),
                // NaN equals nothing, so != holds.
                ("nan = 0", false),
                ("nan != 0", true),
                ("nan < 0 OR nan >= 0", false),
            ],
        );
    }

    #[test]
    fn eval_text_operators() {
        check(
            &sample(),
            &[
                ("title ~ 'da vinci'", true),
                ("title ~ 'DA  VINCI, code'", true),
                ("title ~ 'the'", true),
                ("title ~ 'vinci da'", false),
                ("title ~ 'the code'", false),
                ("title ~ 'vin'", false),
                ("title ~ '  '", false),
                ("name ~ 'report 2024'", true),
                ("name ~ 'pdf'", true),
                ("size ~ 1500", true),
                ("title ^ 'The Da'", true),
                ("title ^ 'the'", false),
                ("title ^ ''", true),
                ("size ^ '15'", true),
                ("size ^ 15", true),
                ("public ^ 'tr'", true),
                ("name * 'report-*.PDF'", true),
                ("name * '*.pdf'", false),
                ("name * 'report-????.PDF'", true),
                ("name * 'report-???.PDF'", false),
                ("name * '*2024*'", true),
                ("name * '*'", true),
                ("name * 'report'", false),
                ("name * ''", false),
                ("name * 'r*o*t*-*F'", true),
                ("size * '1?00'", true),
            ],
        );
    }

    #[test]
    fn eval_range_is_a_range_not_a_set() {
        let r = sample();
        check(
            &r,
            &[
                ("size IN [1500, 2000]", true),
                ("size IN (1500, 2000)", false),
                ("size IN [1000, 1500]", true),
                ("size IN (1000, 1500)", false),
                ("size IN (1000, 2000)", true),
                ("size IN [1000, 2000]", true),
                // Not membership: 1500 is between, though neither bound.
                ("size IN [1, 100000]", true),
                ("size IN [2000, 1000]", false),
                ("size IN [1500, 1500]", true),
                ("size IN (1500, 1500)", false),
            ],
        );
        let hypi_example = "title IN ['Da Vinci Code', 'Inferno']";
        let exclusive = "title IN ('Da Vinci Code', 'Inferno')";
        for (title, incl, excl) in [
            ("Digital Fortress", true, true),
            ("Da Vinci Code", true, false),
            ("Inferno", true, false),
            ("Angels & Demons", false, false),
            ("Origin", false, false),
        ] {
            let r = rec(&[("title", fs(title))]);
            assert_eq!(parse(hypi_example).unwrap().matches(&r), incl, "{title}");
            assert_eq!(parse(exclusive).unwrap().matches(&r), excl, "{title}");
        }
    }

    #[test]
    fn eval_absent_fields() {
        check(
            &sample(),
            &[
                ("missing = 'x'", false),
                ("missing != 'x'", true),
                ("missing != 1", true),
                ("missing < 1", false),
                ("missing > 1", false),
                ("missing <= 1", false),
                ("missing >= 1", false),
                ("missing ~ 'x'", false),
                ("missing ^ ''", false),
                ("missing * '*'", false),
                ("missing IN [0, 1]", false),
                ("missing IN ('', 'zzz')", false),
                ("EXIST missing", false),
                ("NOT EXIST missing", true),
                ("EXIST title", true),
                ("NOT EXIST title", false),
            ],
        );
    }

    #[test]
    fn eval_boolean_structure() {
        check(
            &sample(),
            &[
                ("size = 1 OR size = 1500 AND public = 'false'", false),
                ("(size = 1 OR size = 1500) AND public = 'true'", true),
                ("size = 1 OR size = 1500 AND public = 'true'", true),
                ("size = 1500 OR missing = 1 AND public = 'false'", true),
                ("(size = 1500 OR missing = 1) AND public = 'false'", false),
                ("((EXIST title AND NOT EXIST missing))", true),
                ("*", true),
                ("* SORT size", true),
            ],
        );
        assert!(parse("*").unwrap().matches(&Rec::default()));
    }

    #[test]
    fn sort_absent_last_in_both_directions() {
        let recs = [
            rec(&[("id", fs("a")), ("n", Field::Num(3.0))]),
            rec(&[("id", fs("b"))]),
            rec(&[("id", fs("c")), ("n", Field::Num(1.0))]),
            rec(&[("id", fs("d")), ("n", Field::Num(20.0))]),
        ];
        let order = |q: &str| -> String {
            let query = parse(q).unwrap();
            let mut v: Vec<&Rec> = recs.iter().collect();
            v.sort_by(|a, b| query.compare(*a, *b));
            v.iter()
                .map(|r| field_text(&r.field("id").unwrap()))
                .collect()
        };
        // Numeric order: 20 sorts after 3, which text order would not do.
        assert_eq!(order("* SORT n ASC"), "cadb");
        assert_eq!(order("* SORT n DESC"), "dacb");
        assert_eq!(order("* SORT n"), "dacb");
        // No sort keys: every pair is equal and the stable sort keeps order.
        assert_eq!(order("*"), "abcd");
    }

    #[test]
    fn sort_by_several_keys() {
        let recs = [
            rec(&[("id", fs("1")), ("g", fs("x")), ("n", Field::Num(1.0))]),
            rec(&[("id", fs("2")), ("g", fs("y")), ("n", Field::Num(5.0))]),
            rec(&[("id", fs("3")), ("g", fs("x")), ("n", Field::Num(9.0))]),
            rec(&[("id", fs("4")), ("n", Field::Num(7.0))]),
            rec(&[("id", fs("5")), ("g", fs("y"))]),
        ];
        let query = parse("* SORT g ASC, n DESC").unwrap();
        let mut v: Vec<&Rec> = recs.iter().collect();
        v.sort_by(|a, b| query.compare(*a, *b));
        let ids: String = v
            .iter()
            .map(|r| field_text(&r.field("id").unwrap()))
            .collect();
        assert_eq!(ids, "31254");
    }

    #[test]
    fn sort_mixed_kinds_is_a_total_order() {
        let vals = [
            Field::Num(10.0),
            fs("9"),
            Field::Num(9.5),
            Field::Bool(false),
            fs("abc"),
            Field::Num(f64::NAN),
            Field::Num(-1.0),
        ];
        let recs: Vec<Rec> = vals.iter().map(|v| rec(&[("k", v.clone())])).collect();
        let asc = parse("* SORT k ASC").unwrap();
        let mut v: Vec<&Rec> = recs.iter().collect();
        v.sort_by(|a, b| asc.compare(*a, *b));
        let got: Vec<Field> = v.iter().map(|r| r.field("k").unwrap()).collect();
        // Numbers first (NaN last among them), then text in text order.
        assert_eq!(
            format!("{got:?}"),
            format!(
                "{:?}",
                [
                    Field::Num(-1.0),
                    Field::Num(9.5),
                    Field::Num(10.0),
                    Field::Num(f64::NAN),
                    fs("9"),
                    fs("abc"),
                    Field::Bool(false),
                ]
            )
        );
    }

    #[test]
    fn paths_lists_each_path_once_in_order() {
        let q =
            parse("a=1 AND (b=2 OR EXIST c.d) AND NOT EXIST a OR e IN [1,2] SORT f, b").unwrap();
        assert_eq!(q.paths(), vec!["a", "b", "c.d", "e", "f"]);
        assert_eq!(parse("*").unwrap().paths(), Vec::<&str>::new());
        assert_eq!(parse("* SORT x, x").unwrap().paths(), vec!["x"]);
    }

    #[test]
    fn equality_on_finds_anded_string_equalities() {
        let q = parse("a = 'x' AND b = 1").unwrap();
        assert_eq!(q.equality_on("a"), Some("x"));
        assert_eq!(
            q.equality_on("b"),
            None,
            "numeric equality is not indexable"
        );
        assert_eq!(q.equality_on("c"), None);
        let q = parse("(c = 1 AND (d = 2 AND a = 'x')) AND b = 2").unwrap();
        assert_eq!(q.equality_on("a"), Some("x"));
        assert_eq!(parse("a = 'x'").unwrap().equality_on("a"), Some("x"));
        assert_eq!(parse("a = 'x' OR b = 1").unwrap().equality_on("a"), None);
        assert_eq!(
            parse("(a = 'x' OR b = 1) AND c = 1")
                .unwrap()
                .equality_on("a"),
            None
        );
        assert_eq!(parse("a != 'x'").unwrap().equality_on("a"), None);
        assert_eq!(parse("a ^ 'x'").unwrap().equality_on("a"), None);
        assert_eq!(parse("*").unwrap().equality_on("a"), None);
        assert_eq!(
            parse("a = 'x' AND a = 'y'").unwrap().equality_on("a"),
            Some("x")
        );
    }

    #[test]
    fn wildcard_edge_cases() {
        assert!(wildcard_match("", ""));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("**", "abc"));
        assert!(!wildcard_match("?", ""));
        assert!(wildcard_match("?", "é"));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("a*b*c", "aXbYbZ"));
        // Would take exponential time with naive backtracking.
        let text = "a".repeat(3000);
        assert!(!wildcard_match(&format!("{}b", "*a".repeat(30)), &text));
    }

    // ---- property tests ---------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;
        // Both globs export an `any`; this one is meant.
        use proptest::prelude::any;

        const TOKENS: &[&str] = &[
            "(", ")", "*", "AND", "or", "Not", "EXIST", "exist", "SORT", "asc", "DESC", ",", "IN",
            "in", "[", "]", "=", "!=", "<", ">", "<=", ">=", "~", "^", "==", "!", "'x y'",
            r"'it\'s'", "'", "\\", "''", "1", "-2.5", "1.", ".", "-", "a", "hypi.id", "b_2", "9z",
            " ", "\t", "é", "\"", "a.", ".b",
        ];

        /// Exercises every public entry point, which must not panic either.
        fn exercise(q: &str) {
            if let Ok(query) = parse(q) {
                let empty = Rec::default();
                let full = sample();
                let _ = query.matches(&empty);
                let _ = query.matches(&full);
                let _ = query.compare(&empty, &full);
                let _ = query.compare(&full, &full);
                for p in query.paths() {
                    let _ = query.equality_on(p);
                }
            }
        }

        fn naive_wildcard(p: &[char], t: &[char]) -> bool {
            match (p.first(), t.first()) {
                (None, _) => t.is_empty(),
                (Some('*'), _) => {
                    naive_wildcard(&p[1..], t) || (!t.is_empty() && naive_wildcard(p, &t[1..]))
                }
                (Some(_), None) => false,
                (Some(&c), Some(&d)) => (c == '?' || c == d) && naive_wildcard(&p[1..], &t[1..]),
            }
        }

        fn quote(v: &str) -> String {
            format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
        }

        fn render_value(v: &Value) -> String {
            match v {
                Value::Str(s) => quote(s),
                Value::Num(x) => x.to_string(),
            }
        }

        fn op_text(op: CmpOp) -> &'static str {
            match op {
                CmpOp::Eq => "=",
                CmpOp::Ne => "!=",
                CmpOp::Lt => "<",
                CmpOp::Gt => ">",
                CmpOp::Le => "<=",
                CmpOp::Ge => ">=",
                CmpOp::Words => "~",
                CmpOp::Prefix => "^",
                CmpOp::Wildcard => "*",
            }
        }

        /// Prints an expression with just the parentheses that precedence
        /// and left-associativity require, so the parser's handling of both
        /// is what the round trip tests.
        fn render(e: &Expr) -> String {
            let wrap = |e: &Expr, when: bool| {
                if when {
                    format!("({})", render(e))
                } else {
                    render(e)
                }
            };
            match e {
                Expr::Or(l, r) => {
                    format!("{} OR {}", render(l), wrap(r, matches!(**r, Expr::Or(..))))
                }
                Expr::And(l, r) => format!(
                    "{} and {}",
                    wrap(l, matches!(**l, Expr::Or(..))),
                    wrap(r, matches!(**r, Expr::Or(..) | Expr::And(..)))
                ),
                Expr::Cmp { path, op, value } => {
                    format!("{path} {} {}", op_text(*op), render_value(value))
                }
                Expr::Range {
                    path,
                    lo,
                    hi,
                    inclusive,
                } => {
                    let (o, c) = if *inclusive { ('[', ']') } else { ('(', ')') };
                    format!("{path} IN {o}{}, {}{c}", render_value(lo), render_value(hi))
                }
                Expr::Exist(p) => format!("EXIST {p}"),
                Expr::NotExist(p) => format!("NOT EXIST {p}"),
            }
        }

        fn path_strategy() -> impl Strategy<Value = String> {
            "[a-zA-Z_][a-zA-Z0-9_]{0,4}(\\.[a-zA-Z_][a-zA-Z0-9_]{0,3}){0,2}"
                .prop_filter("a bare EXIST or NOT starting a term is the keyword", |p| {
                    !p.eq_ignore_ascii_case("exist") && !p.eq_ignore_ascii_case("not")
                })
        }

        fn value_strategy() -> impl Strategy<Value = Value> {
            prop_oneof![
                "[a-zA-Z0-9 '\\\\*?_.é-]{0,8}".prop_map(Value::Str),
                (-100_000i32..100_000).prop_map(|x| Value::Num(f64::from(x) / 4.0)),
            ]
        }

        fn op_strategy() -> impl Strategy<Value = CmpOp> {
            prop::sample::select(vec![
                CmpOp::Eq,
                CmpOp::Ne,
                CmpOp::Lt,
                CmpOp::Gt,
                CmpOp::Le,
                CmpOp::Ge,
                CmpOp::Words,
                CmpOp::Prefix,
                CmpOp::Wildcard,
            ])
        }

        fn expr_strategy() -> impl Strategy<Value = Expr> {
            let leaf = prop_oneof![
                (path_strategy(), op_strategy(), value_strategy())
                    .prop_map(|(path, op, value)| Expr::Cmp { path, op, value }),
                (
                    path_strategy(),
                    value_strategy(),
                    value_strategy(),
                    any::<bool>()
                )
                    .prop_map(|(path, lo, hi, inclusive)| Expr::Range {
                        path,
                        lo,
                        hi,
                        inclusive
                    }),
                path_strategy().prop_map(Expr::Exist),
                path_strategy().prop_map(Expr::NotExist),
            ];
            leaf.prop_recursive(5, 40, 2, |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone())
                        .prop_map(|(l, r)| Expr::And(Box::new(l), Box::new(r))),
                    (inner.clone(), inner).prop_map(|(l, r)| Expr::Or(Box::new(l), Box::new(r))),
                ]
            })
        }

        fn field_strategy() -> impl Strategy<Value = Field> {
            prop_oneof![
                "[0-9a-c.]{0,3}".prop_map(Field::Str),
                prop::sample::select(vec![0.0, -0.0, 1.0, 9.5, 10.0, f64::NAN, f64::INFINITY])
                    .prop_map(Field::Num),
                any::<bool>().prop_map(Field::Bool),
            ]
        }

        proptest! {
            #[test]
            fn never_panics_on_arbitrary_strings(q in any::<String>()) {
                exercise(&q);
            }

            #[test]
            fn never_panics_on_token_soup(
                toks in prop::collection::vec(prop::sample::select(TOKENS), 0..40),
                spaced in any::<bool>(),
            ) {
                let q = toks.join(if spaced { " " } else { "" });
                exercise(&q);
            }

            #[test]
            fn errors_point_inside_the_query(q in "[a-z0-9 ()'=<>!~^*,.\\[\\]\\\\-]{0,60}") {
                if let Err(e) = parse(&q) {
                    prop_assert!(e.position <= q.len());
                    prop_assert!(q.is_char_boundary(e.position));
                    prop_assert!(!e.message.is_empty());
                }
            }

            #[test]
            fn printed_expressions_parse_back(e in expr_strategy(), sort in prop::collection::vec((path_strategy(), any::<bool>()), 0..3)) {
                let mut text = render(&e);
                if !sort.is_empty() {
                    let keys: Vec<String> = sort
                        .iter()
                        .map(|(p, asc)| format!("{p} {}", if *asc { "asc" } else { "DESC" }))
                        .collect();
                    text = format!("{text} SORT {}", keys.join(", "));
                }
                let want = Query {
                    filter: Some(e),
                    sort: sort
                        .into_iter()
                        .map(|(path, asc)| SortKey {
                            path,
                            dir: if asc { Direction::Asc } else { Direction::Desc },
                        })
                        .collect(),
                };
                prop_assert_eq!(parse(&text), Ok(want), "{}", text);
            }

            #[test]
            fn wildcard_agrees_with_naive_matcher(p in "[ab*?]{0,7}", t in "[ab]{0,8}") {
                let pc: Vec<char> = p.chars().collect();
                let tc: Vec<char> = t.chars().collect();
                prop_assert_eq!(wildcard_match(&p, &t), naive_wildcard(&pc, &tc));
            }

            #[test]
            fn sort_order_is_total(a in field_strategy(), b in field_strategy(), c in field_strategy()) {
                prop_assert_eq!(cmp_fields(&a, &b), cmp_fields(&b, &a).reverse());
                if cmp_fields(&a, &b) != Ordering::Greater && cmp_fields(&b, &c) != Ordering::Greater {
                    prop_assert_ne!(cmp_fields(&a, &c), Ordering::Greater);
                }
            }
        }
    }
}
