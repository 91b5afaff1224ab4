//! Evaluating a parsed query against a [`Record`]: filtering, sorting, index hints.

use super::glob::{self, Glob};
use super::*;
use std::cmp::Ordering;
use std::collections::HashMap;

/// The text form used whenever a comparison is not number against number;
/// `Display` for `f64` never uses exponents, so `10` is `"10"` and `2.5` is
/// `"2.5"`.
pub(super) fn field_text(f: &Field) -> String {
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

/// Compiled wildcard patterns of one query, by the address of their `Expr` node (stable while
/// the query is borrowed), so a pattern is compiled once per query, not once per record.
#[derive(Default)]
struct Globs(HashMap<usize, Glob>);

impl Globs {
    fn of(q: &Query) -> Globs {
        let mut out = HashMap::new();
        for e in q.leaves() {
            if let Expr::Cmp {
                op: CmpOp::Wildcard,
                value,
                ..
            } = e
            {
                out.insert(e as *const Expr as usize, Glob::new(&value_text(value)));
            }
        }
        Globs(out)
    }

    fn matches(&self, e: &Expr, pattern: &Value, text: &str) -> bool {
        match self.0.get(&(e as *const Expr as usize)) {
            Some(g) => g.matches(text),
            None => glob::matches(&value_text(pattern), text),
        }
    }
}

/// A query ready to run against many records: its wildcard patterns compiled once.
pub struct Matcher<'q> {
    query: &'q Query,
    globs: Globs,
}

impl Matcher<'_> {
    /// Whether `r` passes the filter; always true for `*`.
    pub fn matches(&self, r: &impl Record) -> bool {
        self.query
            .filter
            .as_ref()
            .is_none_or(|e| eval(e, r, &self.globs))
    }
}

/// Terms of a filter on one field (see [`Query::terms_on`]).
#[derive(Debug, Clone)]
pub struct FieldTerms {
    path: String,
    terms: Vec<Expr>,
}

impl FieldTerms {
    /// Whether a record whose field has `value` (`None`: absent) passes every term: exactly
    /// what the filter's own evaluation answers for those terms, as each reads that field only.
    pub fn admits(&self, value: Option<Field>) -> bool {
        let one = OneField {
            path: &self.path,
            value,
        };
        let none = Globs::default();
        self.terms.iter().all(|e| eval_leaf(e, &one, &none))
    }
}

/// A record with one field.
struct OneField<'a> {
    path: &'a str,
    value: Option<Field>,
}

impl Record for OneField<'_> {
    fn field(&self, path: &str) -> Option<Field> {
        (path == self.path).then(|| self.value.clone()).flatten()
    }
}

fn eval_leaf<R: Record>(e: &Expr, r: &R, globs: &Globs) -> bool {
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
                CmpOp::Wildcard => globs.matches(e, value, &field_text(&f)),
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
fn eval<R: Record>(mut e: &Expr, r: &R, globs: &Globs) -> bool {
    loop {
        match e {
            Expr::And(l, rt) => {
                if !eval(rt, r, globs) {
                    return false;
                }
                e = l;
            }
            Expr::Or(l, rt) => {
                if eval(rt, r, globs) {
                    return true;
                }
                e = l;
            }
            leaf => return eval_leaf(leaf, r, globs),
        }
    }
}

/// Total order for sorting: numbers numerically (NaN last among them), then
/// everything else by its text form. Mixed number/text pairs are ranked by
/// kind rather than compared as text because text order and numeric order
/// disagree (`10 < 9.5` as text), which would make the order cyclic, and
/// `slice::sort_by` may panic on a comparator that is not a total order.
pub(super) fn cmp_fields(a: &Field, b: &Field) -> Ordering {
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
    /// Whether `r` passes the filter; always true for `*`. To test many records, build a
    /// [`Query::matcher`] once instead.
    pub fn matches(&self, r: &impl Record) -> bool {
        self.matcher().matches(r)
    }

    /// The query with its wildcard patterns compiled, for testing many records.
    pub fn matcher(&self) -> Matcher<'_> {
        Matcher {
            query: self,
            globs: Globs::of(self),
        }
    }

    /// A price for evaluating the filter once, in units of one plain comparison: wildcard
    /// terms cost what their compiled pattern touches per text character, `~` terms their
    /// word count. Used to refuse costly requests before they run.
    pub fn cost(&self) -> usize {
        let mut cost = 1usize;
        for e in self.leaves() {
            cost = cost.saturating_add(match e {
                Expr::Cmp {
                    op: CmpOp::Wildcard,
                    value,
                    ..
                } => glob::cost_of(&value_text(value)),
                Expr::Cmp {
                    op: CmpOp::Words,
                    value,
                    ..
                } => 1 + words(&value_text(value)).len(),
                _ => 1,
            });
        }
        cost
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

    /// The filter's comparisons and existence tests, left to right. An explicit stack rather
    /// than recursion: see `eval`.
    fn leaves(&self) -> impl Iterator<Item = &Expr> {
        let mut stack: Vec<&Expr> = self.filter.iter().collect();
        std::iter::from_fn(move || loop {
            match stack.pop()? {
                Expr::And(l, r) | Expr::Or(l, r) => {
                    // Right first so the left side comes out first.
                    stack.push(r);
                    stack.push(l);
                }
                leaf => return Some(leaf),
            }
        })
    }

    /// Every path the query mentions (filter and sort), so a caller can
    /// reject unknown paths. Each path appears once, in order of first
    /// mention.
    pub fn paths(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for e in self.leaves() {
            let p = match e {
                Expr::And(..) | Expr::Or(..) => continue,
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

    /// The filter's terms on `path` that are AND-ed at its top (at any depth, never under an
    /// OR), so every record the filter matches passes each of them; `None` when there are
    /// none. A caller tests a record's value at `path` against them before building the
    /// record, and still applies the whole filter to the records that pass.
    pub fn terms_on(&self, path: &str) -> Option<FieldTerms> {
        let mut stack: Vec<&Expr> = self.filter.iter().collect();
        let mut terms = Vec::new();
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(l, r) => {
                    stack.push(r);
                    stack.push(l);
                }
                Expr::Cmp { path: p, .. } | Expr::Range { path: p, .. } if p == path => {
                    terms.push(e.clone())
                }
                Expr::Exist(p) | Expr::NotExist(p) if p == path => terms.push(e.clone()),
                _ => {}
            }
        }
        (!terms.is_empty()).then(|| FieldTerms {
            path: path.to_string(),
            terms,
        })
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
