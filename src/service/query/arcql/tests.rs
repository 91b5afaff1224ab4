//! Tests of the ArcQL parser and evaluator.

use super::eval::{cmp_fields, field_text};
use super::*;
use std::cmp::Ordering;
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
    let q = parse("a=1 AND (b=2 OR EXIST c.d) AND NOT EXIST a OR e IN [1,2] SORT f, b").unwrap();
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
    assert!(glob::matches("", ""));
    assert!(glob::matches("*", ""));
    assert!(glob::matches("**", "abc"));
    assert!(!glob::matches("?", ""));
    assert!(glob::matches("?", "é"));
    assert!(glob::matches("a*b*c", "aXbYbZc"));
    assert!(!glob::matches("a*b*c", "aXbYbZ"));
    // Would take exponential time with naive backtracking.
    let text = "a".repeat(3000);
    assert!(!glob::matches(&format!("{}b", "*a".repeat(30)), &text));
}

#[test]
fn terms_on_a_field_are_those_anded_at_the_top() {
    let q = parse("size > 4990 AND (name ~ 'a' OR size < 3) AND size IN (0, 5000)").unwrap();
    let t = q.terms_on("size").expect("size terms");
    let num = |x: f64| Some(Field::Num(x));
    assert!(t.admits(num(4991.0)));
    assert!(!t.admits(num(4990.0)));
    assert!(!t.admits(num(5000.0)));
    assert!(!t.admits(None), "a record without the field fails `>`");
    assert!(
        q.terms_on("name").is_none(),
        "a term under OR decides nothing alone"
    );
    assert!(parse("size > 1 OR name = 'a'")
        .unwrap()
        .terms_on("size")
        .is_none());
    assert!(parse("*").unwrap().terms_on("size").is_none());
    let t = parse("NOT EXIST size AND name = 'x'")
        .unwrap()
        .terms_on("size")
        .unwrap();
    assert!(t.admits(None));
    assert!(!t.admits(num(1.0)));
}

// ---- property tests ---------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;
    // Both globs export an `any`; this one is meant.
    use proptest::prelude::any;

    const TOKENS: &[&str] = &[
        "(", ")", "*", "AND", "or", "Not", "EXIST", "exist", "SORT", "asc", "DESC", ",", "IN",
        "in", "[", "]", "=", "!=", "<", ">", "<=", ">=", "~", "^", "==", "!", "'x y'", r"'it\'s'",
        "'", "\\", "''", "1", "-2.5", "1.", ".", "-", "a", "hypi.id", "b_2", "9z", " ", "\t", "é",
        "\"", "a.", ".b",
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

    /// `e` with every path renamed to `size` or `name`.
    fn on_two_paths(e: Expr) -> Expr {
        let rename = |p: String| {
            if p.len().is_multiple_of(2) {
                "size"
            } else {
                "name"
            }
            .to_string()
        };
        match e {
            Expr::And(l, r) => Expr::And(Box::new(on_two_paths(*l)), Box::new(on_two_paths(*r))),
            Expr::Or(l, r) => Expr::Or(Box::new(on_two_paths(*l)), Box::new(on_two_paths(*r))),
            Expr::Cmp { path, op, value } => Expr::Cmp {
                path: rename(path),
                op,
                value,
            },
            Expr::Range {
                path,
                lo,
                hi,
                inclusive,
            } => Expr::Range {
                path: rename(path),
                lo,
                hi,
                inclusive,
            },
            Expr::Exist(p) => Expr::Exist(rename(p)),
            Expr::NotExist(p) => Expr::NotExist(rename(p)),
        }
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
            prop_assert_eq!(glob::matches(&p, &t), naive_wildcard(&pc, &tc));
        }

        #[test]
        fn field_terms_admit_every_value_a_matching_record_has(
            e in expr_strategy(),
            size in prop::option::of(field_strategy()),
            name in prop::option::of(field_strategy()),
        ) {
            // Two paths only, so the filter's terms meet the record's fields often.
            let e = on_two_paths(e);
            let mut r = Rec::default();
            if let Some(v) = &size {
                r.0.insert("size".into(), v.clone());
            }
            if let Some(v) = &name {
                r.0.insert("name".into(), v.clone());
            }
            let q = filter(e);
            if q.matches(&r) {
                for path in ["size", "name"] {
                    if let Some(t) = q.terms_on(path) {
                        prop_assert!(t.admits(r.field(path)), "{} refused by {:?}", path, q);
                    }
                }
            }
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
