//! The ArcQL parser (winnow), with error positions that point at the offending token.

use super::*;
use winnow::ascii::{digit1, multispace0, Caseless};
use winnow::combinator::{alt, eof, not, opt, peek, preceded, repeat, separated, terminated};
use winnow::error::{ErrMode, ModalResult, ParserError};
use winnow::stream::{LocatingSlice, Location};
use winnow::token::{any, one_of, take_till, take_while};
use winnow::Parser;

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
