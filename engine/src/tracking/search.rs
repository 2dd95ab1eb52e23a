//! The search grammar of runs, MLflow's: `metrics.auc > 0.9 and params.lr = '0.01'`, with
//! `tags.`, `attributes.` (or `attribute.`, `run.`), backquoted or double-quoted names
//! (`` metrics.`val loss` ``), `=`, `!=`, `<`, `<=`, `>`, `>=` on numbers, `=`, `!=`, `LIKE`,
//! `ILIKE`, `IN (...)`, `NOT IN (...)` on text; clauses joined by `and` (MLflow's grammar), and
//! also `or` and parentheses. `order by` keys are `metrics.auc DESC, params.lr`.
//!
//! Parsed by winnow (a maintained parser-combinator crate), then checked against the target's
//! attributes; every error names its column (1-based, in characters).

use std::cmp::Ordering;
use std::ops::Range;

use winnow::ascii::{Caseless, multispace0};
use winnow::combinator::{alt, cut_err, delimited, opt, preceded, separated, terminated};
use winnow::error::{AddContext, ContextError, ErrMode, StrContext, StrContextValue};
use winnow::prelude::*;
use winnow::stream::LocatingSlice;
use winnow::token::{one_of, take_till, take_while};

type Input<'a> = LocatingSlice<&'a str>;

/// A filter that does not parse or does not fit the target, with where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct SearchError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// Which values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Text,
}

/// What a comparison reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(String),
}

impl Field {
    fn kind(&self, attributes: &[(&str, Kind)]) -> Kind {
        match self {
            Field::Metric(_) => Kind::Number,
            Field::Param(_) | Field::Tag(_) => Kind::Text,
            Field::Attribute(a) => attributes.iter().find(|(n, _)| n == a).map_or(Kind::Text, |(_, k)| *k),
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Metric(k) => write!(f, "metrics.{k}"),
            Field::Param(k) => write!(f, "params.{k}"),
            Field::Tag(k) => write!(f, "tags.{k}"),
            Field::Attribute(k) => write!(f, "attributes.{k}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

/// One comparison, with the span of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: Field,
    pub op: Op,
    pub value: Literal,
    pub span: Range<usize>,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches every run (an empty filter).
    All,
    Cmp(Comparison),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// A value of a field, as a run holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Number(f64),
    Text(std::borrow::Cow<'a, str>),
}

/// What a filter is evaluated on: a run's fields.
pub trait Searchable {
    fn metric(&self, key: &str) -> Option<f64>;
    fn param(&self, key: &str) -> Option<&str>;
    fn tag(&self, key: &str) -> Option<&str>;
    fn attribute(&self, name: &str) -> Option<Value<'_>>;

    fn field(&self, f: &Field) -> Option<Value<'_>> {
        match f {
            Field::Metric(k) => self.metric(k).map(Value::Number),
            Field::Param(k) => self.param(k).map(|s| Value::Text(s.into())),
            Field::Tag(k) => self.tag(k).map(|s| Value::Text(s.into())),
            Field::Attribute(a) => self.attribute(a),
        }
    }
}

impl Filter {
    /// Parses `text` and checks it against the target's attributes (name and kind each).
    pub fn parse(text: &str, attributes: &[(&str, Kind)]) -> Result<Filter, SearchError> {
        if text.trim().is_empty() {
            return Ok(Filter::All);
        }
        bounded(text)?;
        let filter = delimited(multispace0, or_expr, (multispace0, eof_here))
            .parse(LocatingSlice::new(text))
            .map_err(|e| syntax_error(text, e.offset(), e.inner()))?;
        filter.check(text, attributes)?;
        Ok(filter)
    }

    fn check(&self, text: &str, attributes: &[(&str, Kind)]) -> Result<(), SearchError> {
        match self {
            Filter::All => Ok(()),
            Filter::And(fs) | Filter::Or(fs) => fs.iter().try_for_each(|f| f.check(text, attributes)),
            Filter::Cmp(c) => {
                let at = |message: String| SearchError { column: column(text, c.span.start), message };
                if let Field::Attribute(a) = &c.field
                    && !attributes.iter().any(|(n, _)| n == a)
                {
                    let names: Vec<&str> = attributes.iter().map(|(n, _)| *n).collect();
                    return Err(at(format!("there is no attribute `{a}`; there are {}", names.join(", "))));
                }
                let kind = c.field.kind(attributes);
                let ok = matches!(
                    (kind, c.op, &c.value),
                    (Kind::Number, Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge, Literal::Number(_))
                        | (Kind::Text, Op::Eq | Op::Ne | Op::Like | Op::ILike, Literal::Text(_))
                        | (Kind::Text, Op::In | Op::NotIn, Literal::List(_))
                );
                if let (Op::Like | Op::ILike, Literal::Text(p)) = (c.op, &c.value)
                    && p.chars().count() > MAX_PATTERN
                {
                    return Err(at(format!("a LIKE pattern is at most {MAX_PATTERN} characters")));
                }
                if ok {
                    return Ok(());
                }
                Err(at(match kind {
                    Kind::Number => format!(
                        "`{}` is a number: compare it with =, !=, <, <=, > or >= and a number (not {})",
                        c.field,
                        describe(c.op, &c.value)
                    ),
                    Kind::Text => format!(
                        "`{}` is text: compare it with =, !=, LIKE or ILIKE and a quoted string, or IN/NOT IN and a list of them (not {})",
                        c.field,
                        describe(c.op, &c.value)
                    ),
                }))
            }
        }
    }

    /// Whether a run matches. A comparison of a field the run does not have is false.
    pub fn matches(&self, run: &dyn Searchable) -> bool {
        match self {
            Filter::All => true,
            Filter::And(fs) => fs.iter().all(|f| f.matches(run)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(run)),
            Filter::Cmp(c) => match (run.field(&c.field), &c.value) {
                (Some(Value::Number(v)), Literal::Number(x)) => match c.op {
                    Op::Eq => v == *x,
                    Op::Ne => v != *x,
                    Op::Lt => v < *x,
                    Op::Le => v <= *x,
                    Op::Gt => v > *x,
                    Op::Ge => v >= *x,
                    _ => false,
                },
                (Some(Value::Text(v)), Literal::Text(x)) => match c.op {
                    Op::Eq => v == x.as_str(),
                    Op::Ne => v != x.as_str(),
                    Op::Like => like(&v, x, false),
                    Op::ILike => like(&v, x, true),
                    _ => false,
                },
                (Some(Value::Text(v)), Literal::List(xs)) => match c.op {
                    Op::In => xs.iter().any(|x| x == v.as_ref()),
                    Op::NotIn => !xs.iter().any(|x| x == v.as_ref()),
                    _ => false,
                },
                // A numeric attribute compared with text, or the reverse: checked away.
                _ => false,
            },
        }
    }
}

/// The longest filter or order taken, and the deepest nesting of parentheses (the parser
/// recurses once per level).
pub const MAX_TEXT: usize = 16 * 1024;
pub const MAX_DEPTH: usize = 32;
/// The longest LIKE pattern (matching costs text length times pattern length).
pub const MAX_PATTERN: usize = 1000;

/// Refuses a text too long or nested too deep before it is parsed.
fn bounded(text: &str) -> Result<(), SearchError> {
    if text.len() > MAX_TEXT {
        return Err(SearchError { column: 1, message: format!("the text is longer than {MAX_TEXT} bytes") });
    }
    let (mut depth, mut quote) = (0usize, None);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SearchError {
                        column: column(text, i),
                        message: format!("parentheses are nested deeper than {MAX_DEPTH}"),
                    });
                }
            }
            (None, ')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn describe(op: Op, value: &Literal) -> String {
    let op = match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Like => "LIKE",
        Op::ILike => "ILIKE",
        Op::In => "IN",
        Op::NotIn => "NOT IN",
    };
    let value = match value {
        Literal::Number(_) => "a number",
        Literal::Text(_) => "a string",
        Literal::List(_) => "a list",
    };
    format!("{op} with {value}")
}

/// SQL's LIKE: `%` any run of characters, `_` any one character.
pub fn like(text: &str, pattern: &str, caseless: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if caseless { s.chars().flat_map(char::to_lowercase).collect() } else { s.chars().collect() }
    };
    let (t, p) = (fold(text), fold(pattern));
    // The classic two-pointer match with backtracking to the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

/// One `order by` key.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub field: Field,
    pub descending: bool,
}

/// Parses `metrics.auc DESC, attributes.start_time` (ascending by default).
pub fn parse_order_by(text: &str, attributes: &[(&str, Kind)]) -> Result<Vec<OrderKey>, SearchError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    bounded(text)?;
    let keys: Vec<(OrderKey, Range<usize>)> = delimited(
        multispace0,
        separated(1.., order_key, (multispace0, ',', multispace0)),
        (multispace0, eof_here),
    )
    .parse(LocatingSlice::new(text))
    .map_err(|e| syntax_error(text, e.offset(), e.inner()))?;
    for (k, span) in &keys {
        if let Field::Attribute(a) = &k.field
            && !attributes.iter().any(|(n, _)| n == a)
        {
            let names: Vec<&str> = attributes.iter().map(|(n, _)| *n).collect();
            return Err(SearchError {
                column: column(text, span.start),
                message: format!("there is no attribute `{a}`; there are {}", names.join(", ")),
            });
        }
    }
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

/// Compares two runs by `keys`; a run without a key's value sorts after one with it, in
/// either direction.
pub fn compare(a: &dyn Searchable, b: &dyn Searchable, keys: &[OrderKey]) -> Ordering {
    for k in keys {
        let ord = match (a.field(&k.field), b.field(&k.field)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) => {
                let o = match (x, y) {
                    (Value::Number(x), Value::Number(y)) => x.total_cmp(&y),
                    (Value::Text(x), Value::Text(y)) => x.cmp(&y),
                    (Value::Number(_), Value::Text(_)) => Ordering::Less,
                    (Value::Text(_), Value::Number(_)) => Ordering::Greater,
                };
                if k.descending { o.reverse() } else { o }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

// The grammar.

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

fn eof_here(i: &mut Input<'_>) -> ModalResult<()> {
    winnow::combinator::eof.void().context(expected("`and`, `or` or the end of the filter")).parse_next(i)
}

/// A keyword, matched whole and in any case.
fn keyword<'a>(word: &'static str) -> impl Parser<Input<'a>, (), ErrMode<ContextError>> {
    terminated(Caseless(word), winnow::combinator::not(one_of(|c: char| c.is_alphanumeric() || c == '_')))
        .void()
}

fn or_expr(i: &mut Input<'_>) -> ModalResult<Filter> {
    let first = and_expr(i)?;
    let mut rest: Vec<Filter> = winnow::combinator::repeat(
        0..,
        preceded((multispace0, keyword("or"), multispace0), cut_err(and_expr)),
    )
    .parse_next(i)?;
    if rest.is_empty() {
        return Ok(first);
    }
    rest.insert(0, first);
    Ok(Filter::Or(rest))
}

fn and_expr(i: &mut Input<'_>) -> ModalResult<Filter> {
    let first = atom(i)?;
    let mut rest: Vec<Filter> =
        winnow::combinator::repeat(0.., preceded((multispace0, keyword("and"), multispace0), cut_err(atom)))
            .parse_next(i)?;
    if rest.is_empty() {
        return Ok(first);
    }
    rest.insert(0, first);
    Ok(Filter::And(rest))
}

fn atom(i: &mut Input<'_>) -> ModalResult<Filter> {
    alt((
        delimited(('(', multispace0), cut_err(or_expr), cut_err((multispace0, ')')).context(expected("`)`"))),
        comparison.map(Filter::Cmp),
    ))
    .parse_next(i)
}

fn comparison(i: &mut Input<'_>) -> ModalResult<Comparison> {
    let ((field, op, value), span) =
        (field, preceded(multispace0, cut_err(op)), preceded(multispace0, cut_err(literal)))
            .with_span()
            .parse_next(i)?;
    Ok(Comparison { field, op, value, span })
}

fn field(i: &mut Input<'_>) -> ModalResult<Field> {
    let prefix = alt((
        alt((Caseless("metrics"), Caseless("metric"))).value(0),
        alt((Caseless("parameters"), Caseless("params"), Caseless("param"))).value(1),
        alt((Caseless("tags"), Caseless("tag"))).value(2),
        alt((Caseless("attributes"), Caseless("attribute"), Caseless("attr"), Caseless("run"))).value(3),
    ))
    .context(expected("a field such as metrics.auc, params.lr, tags.team or attributes.status"));
    let (which, name) =
        (prefix, preceded(cut_err('.'.context(expected("`.`"))), cut_err(name))).parse_next(i)?;
    Ok(match which {
        0 => Field::Metric(name),
        1 => Field::Param(name),
        2 => Field::Tag(name),
        _ => Field::Attribute(name),
    })
}

/// A key: bare (letters, digits, `_`, `-`, `.`, `/`, `:`), or quoted with backquotes or
/// double quotes.
fn name(i: &mut Input<'_>) -> ModalResult<String> {
    alt((
        delimited('`', take_till(0.., '`'), cut_err('`').context(expected("the closing backquote"))),
        delimited('"', take_till(0.., '"'), cut_err('"').context(expected("the closing double quote"))),
        take_while(1.., |c: char| c.is_alphanumeric() || "_-./:".contains(c)),
    ))
    .verify(|s: &str| !s.is_empty())
    .map(str::to_string)
    .context(expected("a key name"))
    .parse_next(i)
}

fn op(i: &mut Input<'_>) -> ModalResult<Op> {
    alt((symbol_op, word_op))
        .context(expected("a comparison: =, !=, <, <=, >, >=, LIKE, ILIKE, IN or NOT IN"))
        .parse_next(i)
}

fn symbol_op(i: &mut Input<'_>) -> ModalResult<Op> {
    alt((
        alt(("!=", "<>")).value(Op::Ne),
        "<=".value(Op::Le),
        ">=".value(Op::Ge),
        alt(("==", "=")).value(Op::Eq),
        "<".value(Op::Lt),
        ">".value(Op::Gt),
    ))
    .parse_next(i)
}

fn word_op(i: &mut Input<'_>) -> ModalResult<Op> {
    alt((
        keyword("like").value(Op::Like),
        keyword("ilike").value(Op::ILike),
        keyword("in").value(Op::In),
        (keyword("not"), multispace0, keyword("in")).value(Op::NotIn),
    ))
    .parse_next(i)
}

fn literal(i: &mut Input<'_>) -> ModalResult<Literal> {
    alt((
        number.map(Literal::Number),
        text.map(Literal::Text),
        delimited(
            ('(', multispace0),
            cut_err(separated(1.., text, (multispace0, ',', multispace0))),
            cut_err((multispace0, ')')).context(expected("`,` or `)`")),
        )
        .map(Literal::List),
    ))
    .context(expected("a value: a number, a quoted string, or a list of strings in ( )"))
    .parse_next(i)
}

fn number(i: &mut Input<'_>) -> ModalResult<f64> {
    (
        opt(one_of(['-', '+'])),
        take_while(1.., |c: char| c.is_ascii_digit() || c == '.'),
        opt((one_of(['e', 'E']), opt(one_of(['-', '+'])), take_while(1.., |c: char| c.is_ascii_digit()))),
    )
        .take()
        .try_map(|s: &str| s.parse::<f64>())
        .verify(|f: &f64| f.is_finite())
        .parse_next(i)
}

/// A string in single or double quotes; a quote inside is written twice (`'it''s'`) or
/// escaped with a backslash.
fn text(i: &mut Input<'_>) -> ModalResult<String> {
    let quote = one_of(['\'', '"']).parse_next(i)?;
    let mut out = String::new();
    loop {
        let chunk = take_till(0.., |c: char| c == quote || c == '\\').parse_next(i)?;
        out.push_str(chunk);
        let next: ModalResult<char> = winnow::token::any.parse_next(i);
        match next {
            Ok('\\') => {
                let escaped: char = cut_err(winnow::token::any)
                    .context(expected("a character after the backslash"))
                    .parse_next(i)?;
                out.push(escaped);
            }
            Ok(_) => {
                // A doubled quote is one quote character.
                if opt(one_of([quote])).parse_next(i)?.is_some() {
                    out.push(quote);
                } else {
                    return Ok(out);
                }
            }
            Err(_) => {
                return Err(ErrMode::Cut(ContextError::new().add_context(
                    i,
                    &winnow::stream::Stream::checkpoint(i),
                    expected("the closing quote"),
                )));
            }
        }
    }
}

fn order_key(i: &mut Input<'_>) -> ModalResult<(OrderKey, Range<usize>)> {
    let ((field, dir), span) =
        (field, opt(preceded(multispace0, alt((keyword("asc").value(false), keyword("desc").value(true))))))
            .with_span()
            .parse_next(i)?;
    Ok((OrderKey { field, descending: dir.unwrap_or(false) }, span))
}

fn column(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(offset, |s| s.chars().count()) + 1
}

fn syntax_error(text: &str, offset: usize, e: &ContextError) -> SearchError {
    let expected: Vec<String> = e
        .context()
        .filter_map(|c| match c {
            StrContext::Expected(v) => Some(v.to_string()),
            _ => None,
        })
        .collect();
    let found = match text.get(offset..).and_then(|s| s.chars().next()) {
        Some(_) => {
            let rest: String = text[offset..].chars().take(12).collect();
            format!("`{rest}`")
        }
        None => "the end of the filter".to_string(),
    };
    let message = match expected.first() {
        Some(first) => format!("expected {first}, found {found}"),
        None => format!("cannot read the filter at {found}"),
    };
    SearchError { column: column(text, offset), message }
}

#[cfg(test)]
mod tests;
