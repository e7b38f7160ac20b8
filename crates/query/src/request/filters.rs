//! Filters: `[op, dimension, values]`, the only free text of a request
//! besides the timezone, and the part that decides how much work a query
//! is: every `contains` value and `matches` pattern is one scan of a text
//! column per row read, over up to [`MAX_RANGE_DAYS`](super::MAX_RANGE_DAYS)
//! of rows. So besides each value's own bounds, the filters together are
//! bounded ([`MAX_TOTAL_FILTER_VALUES`], [`MAX_SCAN_VALUES`],
//! [`MAX_TOTAL_PATTERN_BYTES`], [`MAX_TOTAL_PATTERN_PROGRAM`]), and each
//! pattern by what RE2 would make of it ([`pattern_program`]): a 256-byte
//! pattern can repeat a large piece a thousand times. Every refusal names
//! the filter, by position (from 1), operator and dimension.

use regex_syntax::ast::{self, Ast, ClassSet, ClassSetItem, RepetitionKind, RepetitionRange};

use super::{bad, parse::parse_dimension, shown};
use super::{Dimension, Filter, Op};
use super::{
    EVENT_TYPES, MAX_FILTERS, MAX_FILTER_VALUES, MAX_NESTED_REPEAT, MAX_PATTERN_BYTES,
    MAX_PATTERN_PROGRAM, MAX_REGEX_NESTING, MAX_REPEAT, MAX_SCAN_VALUES, MAX_TOTAL_FILTER_VALUES,
    MAX_TOTAL_PATTERN_BYTES, MAX_TOTAL_PATTERN_PROGRAM, MAX_VALUE_BYTES,
};
use crate::QueryError;

/// How a refusal names filter `i` (0-based): `filter 3 ["matches", "event:page"]`.
/// Both are names (the longest is 18 bytes), so anything longer is cut short:
/// the message quotes the offending value too.
fn named(i: usize, op: &str, dimension: &str) -> String {
    format!(
        "filter {} [{:?}, {:?}]",
        i + 1,
        engine_text::shown(op, 24),
        engine_text::shown(dimension, 24)
    )
}

/// Checks one value of filter `at` (named as [`named`] does); returns the
/// estimated program of a `matches` pattern (0 for other operators).
fn check_value(at: &str, op: Op, v: &str) -> Result<u64, QueryError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(bad(format!(
            "{at}: a filter value is longer than {MAX_VALUE_BYTES} bytes"
        )));
    }
    if v.contains('\0') {
        return Err(bad(format!("{at}: a filter value holds a NUL character")));
    }
    if op != Op::Matches {
        return Ok(0);
    }
    if v.len() > MAX_PATTERN_BYTES {
        return Err(bad(format!(
            "{at}: a `matches` pattern is longer than {MAX_PATTERN_BYTES} bytes"
        )));
    }
    let invalid = || {
        bad(format!(
            "{at}: {} is not a valid regular expression (RE2 syntax)",
            shown(v)
        ))
    };
    // The syntax tree first: cheap, and enough for the program estimate.
    let ast = ast::parse::ParserBuilder::new()
        .nest_limit(MAX_REGEX_NESTING)
        .build()
        .parse(v)
        .map_err(|_| invalid())?;
    let program = pattern_program(&ast)
        .map_err(|e| bad(format!("{at}: the pattern {} {e}; narrow it", shown(v))))?;
    if program > MAX_PATTERN_PROGRAM {
        return Err(bad(format!(
            "{at}: the pattern {} is too large for a filter (about {program} RE2 instructions, \
             at most {MAX_PATTERN_PROGRAM}); narrow its repetitions and classes",
            shown(v)
        )));
    }
    // Translating is what checks the rest of RE2's syntax, and case folding
    // a class costs in proportion to its size: `(?i)\p{Any}` takes ~13 ms
    // (a review found a 100-value filter of them stalling a shard for 6 s).
    // So the classes are measured first, with case-insensitivity taken out,
    // and a case-insensitive pattern may only use classes of at most
    // MAX_FOLDED_CLASS_CODEPOINTS; then the real translation is cheap.
    let mut folding = false;
    let mut plain = ast.clone();
    strip_case_insensitive(&mut plain, &mut folding);
    regex_syntax::hir::translate::Translator::new()
        .translate(v, &plain)
        .map_err(|_| invalid())?;
    if folding {
        if let Err(why) = foldable(&ast) {
            return Err(bad(format!(
                "{at}: the case-insensitive pattern {} uses {why}, which `(?i)` does not \
                 allow in a filter; list the characters instead",
                shown(v)
            )));
        }
        let widest = widest_class(&ast, v);
        if widest > MAX_FOLDED_CLASS_CODEPOINTS {
            return Err(bad(format!(
                "{at}: the case-insensitive pattern {} uses a class of {widest} characters \
                 (at most {MAX_FOLDED_CLASS_CODEPOINTS} with `(?i)`); narrow it",
                shown(v)
            )));
        }
        regex_syntax::hir::translate::Translator::new()
            .translate(v, &ast)
            .map_err(|_| invalid())?;
    }
    Ok(program)
}

/// Whether the translator's case folding of `ast`'s classes costs what
/// [`widest_class`] measures: it folds each class before negating it and
/// each operand of a set operation, so `(?i)[^\s\S]` (empty once negated)
/// folds all of Unicode; and `x` mode changes how a class's text reads
/// alone. So with `(?i)`, classes may not be negated (`[^…]`, `\P{…}`,
/// `\W`, `\S`, `\D`), use set operations, or sit in `x` mode (a second
/// review found each of these passing the size check while costing
/// ~13 ms a class).
fn foldable(ast: &Ast) -> Result<(), &'static str> {
    fn unicode(u: &ast::ClassUnicode) -> Result<(), &'static str> {
        let not_equal = matches!(
            &u.kind,
            ast::ClassUnicodeKind::NamedValue {
                op: ast::ClassUnicodeOpKind::NotEqual,
                ..
            }
        );
        if u.negated || not_equal {
            Err("a negated Unicode class")
        } else {
            Ok(())
        }
    }
    fn item(i: &ClassSetItem) -> Result<(), &'static str> {
        match i {
            ClassSetItem::Unicode(u) => unicode(u),
            ClassSetItem::Perl(p) if p.negated => Err("a negated class"),
            ClassSetItem::Bracketed(b) => bracketed(b),
            ClassSetItem::Union(u) => u.items.iter().try_for_each(item),
            _ => Ok(()),
        }
    }
    fn bracketed(b: &ast::ClassBracketed) -> Result<(), &'static str> {
        if b.negated {
            return Err("a negated class");
        }
        match &b.kind {
            ClassSet::BinaryOp(_) => Err("a class set operation"),
            ClassSet::Item(i) => item(i),
        }
    }
    let flags = |f: &ast::Flags| {
        if f.flag_state(ast::Flag::IgnoreWhitespace).is_some() {
            Err("the `x` flag")
        } else {
            Ok(())
        }
    };
    match ast {
        Ast::ClassUnicode(u) => unicode(u),
        Ast::ClassPerl(p) if p.negated => Err("a negated class"),
        Ast::ClassBracketed(b) => bracketed(b),
        Ast::Flags(f) => flags(&f.flags),
        Ast::Group(g) => {
            if let ast::GroupKind::NonCapturing(f) = &g.kind {
                flags(f)?;
            }
            foldable(&g.ast)
        }
        Ast::Repetition(r) => foldable(&r.ast),
        Ast::Alternation(a) => a.asts.iter().try_for_each(foldable),
        Ast::Concat(c) => c.asts.iter().try_for_each(foldable),
        _ => Ok(()),
    }
}

/// Most characters a class of a case-insensitive pattern may hold.
pub const MAX_FOLDED_CLASS_CODEPOINTS: u64 = 4096;

/// Takes the case-insensitive flag out of `ast` (setting `found` when there
/// was one). Recursion is bounded by the parser's nest limit.
fn strip_case_insensitive(ast: &mut Ast, found: &mut bool) {
    let strip = |flags: &mut ast::Flags, found: &mut bool| {
        let before = flags.items.len();
        flags
            .items
            .retain(|i| !matches!(i.kind, ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive)));
        *found |= flags.items.len() != before;
        // A lone `-` left behind is not valid syntax for the translator.
        if flags
            .items
            .last()
            .is_some_and(|i| i.kind == ast::FlagsItemKind::Negation)
        {
            flags.items.pop();
        }
    };
    match ast {
        Ast::Flags(f) => strip(&mut f.flags, found),
        Ast::Group(g) => {
            if let ast::GroupKind::NonCapturing(flags) = &mut g.kind {
                strip(flags, found);
            }
            strip_case_insensitive(&mut g.ast, found);
        }
        Ast::Repetition(r) => strip_case_insensitive(&mut r.ast, found),
        Ast::Alternation(a) => a
            .asts
            .iter_mut()
            .for_each(|x| strip_case_insensitive(x, found)),
        Ast::Concat(c) => c
            .asts
            .iter_mut()
            .for_each(|x| strip_case_insensitive(x, found)),
        _ => {}
    }
}

/// The number of characters of the widest bracketed or Unicode class of
/// `ast` (the pattern `v`'s tree), each translated alone, without folding.
/// Perl classes (`\w`, `\d`, `\s`) and `.` do not count: the translator
/// does not fold them (they are closed under case already), so they cost
/// nothing with `(?i)`.
fn widest_class(ast: &Ast, v: &str) -> u64 {
    use regex_syntax::hir::{Class, HirKind};
    let size = |span: &ast::Span| -> u64 {
        let Some(text) = v.get(span.start.offset..span.end.offset) else {
            return u64::MAX;
        };
        let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(text) else {
            return u64::MAX;
        };
        match hir.kind() {
            HirKind::Class(Class::Unicode(c)) => c
                .ranges()
                .iter()
                .map(|r| u64::from(r.end()) - u64::from(r.start()) + 1)
                .sum(),
            HirKind::Class(Class::Bytes(c)) => c
                .ranges()
                .iter()
                .map(|r| u64::from(r.end()) - u64::from(r.start()) + 1)
                .sum(),
            _ => 0,
        }
    };
    match ast {
        Ast::ClassUnicode(c) => size(&c.span),
        Ast::ClassBracketed(c) => size(&c.span),
        Ast::Group(g) => widest_class(&g.ast, v),
        Ast::Repetition(r) => widest_class(&r.ast, v),
        Ast::Alternation(a) => a.asts.iter().map(|x| widest_class(x, v)).max().unwrap_or(0),
        Ast::Concat(c) => c.asts.iter().map(|x| widest_class(x, v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// The request's filters, validated, alone and together.
pub(super) fn parse_filters(
    raw: &[(String, String, Vec<String>)],
) -> Result<Vec<Filter>, QueryError> {
    if raw.len() > MAX_FILTERS {
        return Err(bad(format!("give at most {MAX_FILTERS} filters")));
    }
    let mut values_in_all = 0usize;
    let mut scans = 0usize;
    let mut pattern_bytes = 0usize;
    let mut program = 0u64;
    let mut filters = Vec::with_capacity(raw.len());
    for (i, (op, d, values)) in raw.iter().enumerate() {
        let at = named(i, op, d);
        let op = match op.as_str() {
            "is" => Op::Is,
            "is_not" => Op::IsNot,
            "contains" => Op::Contains,
            "matches" => Op::Matches,
            other => {
                return Err(bad(format!(
                    "{at}: unknown filter operator {} (is, is_not, contains, matches)",
                    shown(other)
                )))
            }
        };
        if values.is_empty() || values.len() > MAX_FILTER_VALUES {
            return Err(bad(format!(
                "{at}: a filter takes 1 to {MAX_FILTER_VALUES} values"
            )));
        }
        values_in_all += values.len();
        if values_in_all > MAX_TOTAL_FILTER_VALUES {
            return Err(bad(format!(
                "{at}: the filters hold more than {MAX_TOTAL_FILTER_VALUES} values in all"
            )));
        }
        // The counts first: each value's own check (a pattern's parse) is
        // the costly part, and is done only for values within them.
        if matches!(op, Op::Contains | Op::Matches) {
            scans += values.len();
            if scans > MAX_SCAN_VALUES {
                return Err(bad(format!(
                    "{at}: the filters hold more than {MAX_SCAN_VALUES} `contains`/`matches` \
                     values in all (each one scans every row of the range)"
                )));
            }
            pattern_bytes += values.iter().map(String::len).sum::<usize>();
            if pattern_bytes > MAX_TOTAL_PATTERN_BYTES {
                return Err(bad(format!(
                    "{at}: the `contains`/`matches` values of the filters are longer than \
                     {MAX_TOTAL_PATTERN_BYTES} bytes in all"
                )));
            }
        }
        for v in values {
            program += check_value(&at, op, v)?;
            if program > MAX_TOTAL_PATTERN_PROGRAM {
                return Err(bad(format!(
                    "{at}: the `matches` patterns of the filters are too large together \
                         (about {program} RE2 instructions, at most {MAX_TOTAL_PATTERN_PROGRAM})"
                )));
            }
        }
        let dimension = parse_dimension(d)
            .map_err(|QueryError::Invalid(m)| bad(format!("filter {}: {m}", i + 1)))?;
        // Compared to the column itself (its index serves it), so only
        // the types there are.
        if dimension == Dimension::EventType && matches!(op, Op::Is | Op::IsNot) {
            if let Some(v) = values.iter().find(|v| !EVENT_TYPES.contains(&v.as_str())) {
                return Err(bad(format!(
                    "{at}: unknown event type {} (one of {})",
                    shown(v),
                    EVENT_TYPES.join(", ")
                )));
            }
        }
        filters.push(Filter {
            op,
            dimension,
            values: values.clone(),
        });
    }
    Ok(filters)
}

/// About how many RE2 instructions a pattern compiles to, from its syntax
/// tree; or why it is refused outright (a counted repetition over
/// [`MAX_REPEAT`], or nested ones multiplying past [`MAX_NESTED_REPEAT`]).
///
/// RE2 compiles `x{n,m}` to `m` copies of `x` (and `x{n,}` to `n + 1`), so
/// repetitions multiply the size of what they repeat. A byte of a literal
/// is one instruction; `.` and ranges beyond ASCII are a few UTF-8
/// sequences; a Unicode class (`\pL`) is hundreds. RE2's Perl classes
/// (`\d`, `\w`, `\s`) are ASCII. The numbers are deliberately coarse: they
/// only need to tell a filter from a program of tens of thousands of
/// instructions run on every row. The walk is as deep as the nesting the
/// parser allowed ([`MAX_REGEX_NESTING`]).
pub(crate) fn pattern_program(ast: &Ast) -> Result<u64, String> {
    walk(ast, 1)
}

/// Instructions of `.` in UTF-8 (every character but `\n`).
const DOT: u64 = 8;
/// Instructions of a non-ASCII range, or a negated class.
const WIDE_RANGE: u64 = 8;
/// Instructions of a Unicode class such as `\pL`.
const UNICODE_CLASS: u64 = 256;

fn walk(ast: &Ast, nested: u64) -> Result<u64, String> {
    Ok(match ast {
        Ast::Empty(_) | Ast::Flags(_) => 0,
        Ast::Literal(l) => l.c.len_utf8() as u64,
        Ast::Dot(_) => DOT,
        Ast::Assertion(_) => 1,
        Ast::ClassUnicode(_) => UNICODE_CLASS,
        Ast::ClassPerl(p) => {
            if p.negated {
                WIDE_RANGE
            } else {
                4
            }
        }
        Ast::ClassBracketed(b) => class(&b.kind, b.negated),
        Ast::Repetition(r) => {
            let copies = match &r.op.kind {
                RepetitionKind::ZeroOrOne
                | RepetitionKind::ZeroOrMore
                | RepetitionKind::OneOrMore => 1,
                RepetitionKind::Range(range) => {
                    let (low, high) = match *range {
                        RepetitionRange::Exactly(n) => (n, n),
                        RepetitionRange::AtLeast(n) => (n, n),
                        RepetitionRange::Bounded(m, n) => (m, n),
                    };
                    let most = low.max(high);
                    if most > MAX_REPEAT {
                        return Err(format!(
                            "repeats a part {most} times (at most {MAX_REPEAT})"
                        ));
                    }
                    match *range {
                        RepetitionRange::AtLeast(n) => u64::from(n) + 1,
                        _ => u64::from(most).max(1),
                    }
                }
            };
            let nested = nested.saturating_mul(copies);
            if nested > MAX_NESTED_REPEAT {
                return Err(format!(
                    "nests repetitions that copy a part {nested} times (at most {MAX_NESTED_REPEAT})"
                ));
            }
            walk(&r.ast, nested)?.saturating_mul(copies)
        }
        Ast::Group(g) => walk(&g.ast, nested)?.saturating_add(2),
        Ast::Alternation(a) => {
            let mut n = a.asts.len() as u64;
            for x in &a.asts {
                n = n.saturating_add(walk(x, nested)?);
            }
            n
        }
        Ast::Concat(c) => {
            let mut n = 0u64;
            for x in &c.asts {
                n = n.saturating_add(walk(x, nested)?);
            }
            n
        }
    })
}

/// Instructions of a bracketed class (`[a-z\pL]`), at least one.
fn class(set: &ClassSet, negated: bool) -> u64 {
    let n = match set {
        ClassSet::Item(item) => class_item(item),
        ClassSet::BinaryOp(op) => class(&op.lhs, false).saturating_add(class(&op.rhs, false)),
    };
    if negated {
        n.saturating_add(WIDE_RANGE)
    } else {
        n.max(1)
    }
}

fn class_item(item: &ClassSetItem) -> u64 {
    match item {
        ClassSetItem::Empty(_) => 0,
        ClassSetItem::Literal(l) => l.c.len_utf8() as u64,
        ClassSetItem::Range(r) => {
            if r.end.c.is_ascii() {
                1
            } else {
                WIDE_RANGE
            }
        }
        ClassSetItem::Ascii(_) => 4,
        ClassSetItem::Unicode(_) => UNICODE_CLASS,
        ClassSetItem::Perl(p) => {
            if p.negated {
                WIDE_RANGE
            } else {
                4
            }
        }
        ClassSetItem::Bracketed(b) => class(&b.kind, b.negated),
        ClassSetItem::Union(u) => u
            .items
            .iter()
            .fold(0u64, |n, i| n.saturating_add(class_item(i))),
    }
}
