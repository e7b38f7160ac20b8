//! The documentation's links and the Quickstart's commands: every relative
//! link and image in the committed Markdown resolves (the file exists; an
//! anchor names a heading, or an `id`, of its page), and every program the
//! README's Quickstart runs exists in the repository or is a subcommand of
//! the binary. Pure checks over (path, text), tested on inline pages below;
//! no service needed.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The committed Markdown files, repo-relative (outside vendored folders).
fn markdown_files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files", "*.md"])
        .current_dir(root())
        .output()
        .expect("git ls-files");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|p| !p.contains("node_modules/") && !p.starts_with("fuzz/corpus"))
        .map(PathBuf::from)
        .collect()
}

/// GitHub's anchor of a heading's text: lowercased, every character but
/// letters, digits, spaces, `-` and `_` dropped, spaces as `-`.
fn slug(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page: its headings' slugs (a repeated one as `-1`,
/// `-2`, …) and explicit `id="…"` / `name="…"` attributes.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    for ev in Parser::new(text) {
        match ev {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let base = slug(&h);
                    let n = seen.entry(base.clone()).or_insert(0);
                    out.insert(if *n == 0 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    });
                    *n += 1;
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            _ => {}
        }
    }
    for attr in ["id=\"", "name=\""] {
        for (i, _) in text.match_indices(attr) {
            if let Some(value) = text.get(i + attr.len()..).and_then(|r| r.split('"').next()) {
                out.insert(value.to_string());
            }
        }
    }
    out
}

/// Every link and image destination of a page, with its line.
fn links(text: &str) -> Vec<(usize, String)> {
    let line_of = |offset: usize| 1 + text.get(..offset).map_or(0, |t| t.matches('\n').count());
    Parser::new(text)
        .into_offset_iter()
        .filter_map(|(ev, range)| match ev {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                Some((line_of(range.start), dest_url.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// What is wrong with the links of `page` (repo-relative), given a way to
/// read other pages and to ask whether a path exists.
fn check_page(
    page: &Path,
    text: &str,
    exists: &dyn Fn(&Path) -> bool,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<String> {
    let dir = page.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (line, dest) in links(text) {
        if dest.contains("://") || dest.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match dest.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (dest.as_str(), None),
        };
        let target = if path.is_empty() {
            page.to_path_buf()
        } else {
            normalize(&dir.join(path))
        };
        let at = format!("{}:{line}: ({dest})", page.display());
        if !path.is_empty() && !exists(&target) {
            problems.push(format!("{at}: {} does not exist", target.display()));
            continue;
        }
        if let Some(anchor) = anchor.filter(|a| !a.is_empty()) {
            if target.extension().is_some_and(|e| e == "md") {
                let body = if path.is_empty() {
                    Some(text.to_string())
                } else {
                    read(&target)
                };
                let known = body.map(|b| anchors(&b)).unwrap_or_default();
                if !known.contains(anchor) {
                    problems.push(format!(
                        "{at}: {} has no heading with the anchor #{anchor}",
                        target.display()
                    ));
                }
            }
        }
    }
    problems
}

/// `a/b/../c` as `a/c` (links are resolved by the viewer, not the disk).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let files = markdown_files();
    assert!(
        files.iter().any(|f| f.starts_with("docs")),
        "docs/ has pages: {files:?}"
    );
    let exists = |p: &Path| root().join(p).exists();
    let read = |p: &Path| std::fs::read_to_string(root().join(p)).ok();
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(root().join(f)).unwrap_or_default();
        problems.extend(check_page(f, &text, &exists, &read));
    }
    assert!(
        problems.is_empty(),
        "broken links in the docs (fix the link, or the heading it names):\n{}",
        problems.join("\n")
    );
}

/// The shell commands of the README's Quickstart code blocks, one per
/// program run (split at `&&`, `;` and `|`; continuation lines joined).
fn quickstart_commands(readme: &str) -> Vec<String> {
    let mut in_quickstart = false;
    let mut heading: Option<(HeadingLevel, String)> = None;
    let mut code: Option<String> = None;
    let mut commands = Vec::new();
    for ev in Parser::new(readme) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level, String::new())),
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    if level == HeadingLevel::H2 {
                        in_quickstart = text.trim() == "Quickstart";
                    }
                }
            }
            Event::Start(Tag::CodeBlock(kind)) if in_quickstart => {
                let shell = match &kind {
                    CodeBlockKind::Fenced(lang) => {
                        matches!(&**lang, "" | "sh" | "bash" | "shell" | "console")
                    }
                    CodeBlockKind::Indented => true,
                };
                code = shell.then(String::new);
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(block) = code.take() {
                    commands.extend(split_commands(&block));
                }
            }
            Event::Text(t) => {
                if let Some((_, h)) = heading.as_mut() {
                    h.push_str(&t);
                } else if let Some(c) = code.as_mut() {
                    c.push_str(&t);
                }
            }
            _ => {}
        }
    }
    commands
}

/// The commands of a shell block: a newline, `&&`, `;` or `|` outside
/// quotes ends one (a quoted SQL text spans lines); `\` + newline
/// continues it; comments and output lines (`{…}` JSON) are skipped.
fn split_commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut single, mut double, mut comment) = (false, false, false);
    let mut chars = block.chars().peekable();
    let end = |current: &mut String, out: &mut Vec<String>| {
        let c = current.trim();
        let c = c.strip_prefix("$ ").unwrap_or(c);
        if !c.is_empty() && !c.starts_with('{') {
            out.push(c.to_string());
        }
        current.clear();
    };
    while let Some(ch) = chars.next() {
        if comment {
            if ch == '\n' {
                comment = false;
                end(&mut current, &mut out);
            }
            continue;
        }
        match ch {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '\\' if chars.peek() == Some(&'\n') && !single => {
                chars.next();
                current.push(' ');
                continue;
            }
            '#' if !single && !double && (current.trim().is_empty() || current.ends_with(' ')) => {
                comment = true;
                continue;
            }
            '\n' | ';' | '|' if !single && !double => {
                end(&mut current, &mut out);
                continue;
            }
            '&' if !single && !double && chars.peek() == Some(&'&') => {
                chars.next();
                end(&mut current, &mut out);
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    end(&mut current, &mut out);
    out
}

/// Programs of the Quickstart that come with the system (or, like
/// `python3`, are what the reader brings), not with this repository.
const SYSTEM_TOOLS: &[&str] = &["curl", "cd", "python3", "open", "xdg-open", "echo", "cat"];

#[test]
fn every_command_in_the_quickstart_exists() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let commands = quickstart_commands(&readme);
    assert!(
        commands.iter().any(|c| c.starts_with("scripts/up")),
        "the Quickstart runs scripts/up: {commands:?}"
    );
    let mut problems = Vec::new();
    for command in &commands {
        let mut words = command
            .split_whitespace()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'));
        let Some(program) = words.next() else {
            continue;
        };
        if program.ends_with("ingestion-engine") {
            let sub = words.find(|w| !w.starts_with('-'));
            if let Some(sub) = sub {
                let ok = Command::new(env!("CARGO_BIN_EXE_ingestion-engine"))
                    .args([sub, "--help"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    problems.push(format!("`{command}`: `{sub}` is not a subcommand"));
                }
            }
            continue;
        }
        if SYSTEM_TOOLS.contains(&program) {
            continue;
        }
        let path = root().join(program.trim_start_matches("./"));
        if !path.is_file() {
            problems.push(format!(
                "`{command}`: {program} is not a file of the repository"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's Quickstart runs what does not exist:\n{}",
        problems.join("\n")
    );
}

#[test]
fn github_slugs() {
    for (heading, anchor) in [
        (
            "Switching from Segment or PostHog",
            "switching-from-segment-or-posthog",
        ),
        (
            "Broker → ClickHouse: exactly once",
            "broker--clickhouse-exactly-once",
        ),
        ("`serve` and `--role`", "serve-and---role"),
        (
            "Public keys and the edge's budget",
            "public-keys-and-the-edges-budget",
        ),
    ] {
        assert_eq!(slug(heading), anchor);
    }
}

#[test]
fn the_checker_finds_a_missing_file_a_missing_anchor_and_passes_good_links() {
    let page = Path::new("docs/a.md");
    let other = "# Other\n\n## Retries and ids\n";
    let text = "# A\n\n## Here\n\n[ok](b.md#retries-and-ids) [self](#here) [gone](c.md) \
                [wrong](b.md#nothing) [web](https://example.com/x#y) ![img](../pic.png)\n";
    let exists = |p: &Path| p == Path::new("docs/b.md") || p == Path::new("pic.png");
    let read = |p: &Path| (p == Path::new("docs/b.md")).then(|| other.to_string());
    let problems = check_page(page, text, &exists, &read);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("docs/c.md does not exist"),
        "{problems:#?}"
    );
    assert!(problems[1].contains("#nothing"), "{problems:#?}");
    assert!(problems[0].starts_with("docs/a.md:5:"), "{problems:#?}");
}

#[test]
fn quickstart_commands_are_split_into_programs() {
    let readme = "# X\n\n## Quickstart\n\n```sh\nscripts/up      # starts it\nFOO=1 scripts/test && ./target/release/ingestion-engine dump\ncurl -X POST \\\n  http://x\ncurl -d \"SELECT 1\n  FROM t\" http://y\n```\n\n```json\n{\"a\":1}\n```\n\n## Other\n\n```sh\nnot-this\n```\n";
    assert_eq!(
        quickstart_commands(readme),
        [
            "scripts/up",
            "FOO=1 scripts/test",
            "./target/release/ingestion-engine dump",
            "curl -X POST    http://x",
            "curl -d \"SELECT 1\n  FROM t\" http://y"
        ]
    );
}
