//! Checks of a Chef cookbook, kept to what reading its files can establish
//! without running Ruby.
//!
//! Kept (static only — rendering cannot find these):
//! - every key a `*.json.erb` template writes is a file key the binary reads:
//!   its literal JSON keys, or the keys of the recipe's hash literal it
//!   serialises whole (`JSON.pretty_generate(@config)`). Every key of the
//!   literal is checked, including those whose value is `nil` on the node
//!   the deploy checks render for (the recipe drops them before rendering,
//!   so `config check` on the render never sees a misspelt one);
//! - a `*.service.erb` unit's `ExecStart` parses with the binary's own
//!   parser (ERB tags stand in as a placeholder word);
//! - a `TimeoutStopSec` written as a literal (or left unset: systemd's 90s)
//!   exceeds the drain budget plus the longest step timeout, when the drain
//!   budget is a literal too (or left at the binary's default).
//!
//! Dropped: the static Ruby evaluator, which resolved `TimeoutStopSec=<%=
//! @timeout_stop_sec %>s` and `'drain_timeout' => "#{drain_seconds}s"`
//! through the template's `variables(...)`, the recipe's locals and
//! `attributes/*.rb` with integer arithmetic. It re-implemented a corner of
//! Ruby, and the deploy checks (`scripts/check-deploy.sh`) already converge
//! the recipe with Ruby, render both templates with ERB, pass the rendered
//! config.json through `sqsaga config check`, and compare the rendered unit's
//! `TimeoutStopSec` with the attribute drain plus the longest step of the
//! deployed definitions. A value computed by Ruby is therefore not checked
//! here, and not reported either (the shipped cookbook computes both).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use sqsaga_core::duration::parse_duration;

use crate::manifests::grace_problem;
use crate::{Binary, Finding, Invocation, LintError, LongestStep, Report, Role, Severity, basename};

/// The texts of a cookbook, by path relative to the cookbook.
#[derive(Debug, Clone, Default)]
pub struct Cookbook {
    /// How findings name the cookbook directory.
    pub dir: String,
    /// `recipes/*.rb`.
    pub recipes: Vec<(String, String)>,
    /// `templates/**/*.erb`.
    pub templates: Vec<(String, String)>,
}

/// Reads the recipes and templates of the cookbook at `dir`.
pub fn read_cookbook(dir: &Path) -> Result<Cookbook, LintError> {
    let read_dir = |sub: &str, ext: &str| -> Result<Vec<(String, String)>, LintError> {
        let mut out = Vec::new();
        let mut stack = vec![dir.join(sub)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for entry in entries {
                let path =
                    entry.map_err(|e| LintError::Read { path: d.display().to_string(), cause: e.to_string() })?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(ext) {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| LintError::Read { path: path.display().to_string(), cause: e.to_string() })?;
                    let rel = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
                    out.push((rel, text));
                }
            }
        }
        out.sort();
        Ok(out)
    };
    Ok(Cookbook {
        dir: dir.display().to_string(),
        recipes: read_dir("recipes", ".rb")?,
        templates: read_dir("templates", ".erb")?,
    })
}

/// Checks a cookbook: config template keys, the unit's command line and, when
/// written literally, its stop budget. `longest` is the longest step timeout
/// of the definitions deployed beside it, when known.
pub fn lint_cookbook(cookbook: &Cookbook, longest: Option<&LongestStep>, binary: &Binary<'_>) -> Vec<Finding> {
    let mut r = Report::new(&cookbook.dir);
    let resources = templates(cookbook);
    let known: BTreeSet<&str> = sqsaga_config::known_file_keys().into_iter().collect();
    // The drain budget the config sets: `None` while unknown (computed by Ruby).
    let default_drain = || {
        let default = sqsaga_config::spec("drain_timeout").and_then(|s| s.default).unwrap_or("0s");
        (parse_duration(default).unwrap_or_default(), format!("the default of `drain_timeout`, {default}"))
    };
    let mut drain: Option<(Duration, String)> = Some(default_drain());

    for (name, text) in cookbook.templates.iter().filter(|(n, _)| n.ends_with(".json.erb")) {
        let text = &without_erb_comments(text);
        let file = format!("{}/{name}", cookbook.dir);
        let resource = resources.iter().find(|t| t.source == basename(name));
        // Literal JSON keys of the template itself.
        let mut literal = text.clone();
        for (_, _, range) in erb_tags(text).iter().rev() {
            literal.replace_range(range.clone(), "0");
        }
        let mut checked = false;
        for (key, line, value) in json_keys(&literal) {
            checked = true;
            if !known.contains(key.as_str()) {
                let path = format!("config.json key `{key}`");
                r.push_in(format!("{file}:{line}"), Severity::Error, path, unknown_key_message(&key, &known));
            } else if key == "drain_timeout" {
                drain = value.and_then(|v| literal_duration(&v, &format!("`drain_timeout` in {name}:{line}")));
            }
        }
        // A Ruby hash serialised whole (`JSON.pretty_generate(@config)`, `@config.to_json`).
        for (expr, _, _) in erb_tags(text) {
            let Some(var) = serialised_variable(&expr) else { continue };
            checked = true;
            let var_path = format!("@{var}");
            let Some(resource) = resource else {
                let message = "no recipe renders this template: the keys of the hash are not checked";
                r.push_in(file.clone(), Severity::Warning, var_path, message.into());
                continue;
            };
            let Some(value) = resource.variables.get(&var) else {
                let message = format!("{} passes no `{var}` to this template", resource.recipe);
                r.push_in(file.clone(), Severity::Warning, var_path, message);
                continue;
            };
            let is_name = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let Some((recipe, keys)) = is_name.then(|| hash_literal(cookbook, value)).flatten() else {
                let message = format!("is `{value}`, not a hash literal of the recipe: its keys are not checked");
                r.push_in(file.clone(), Severity::Warning, var_path, message);
                continue;
            };
            for HashKey { key, expr, line } in keys {
                let at = format!("{}/{recipe}:{line}", cookbook.dir);
                let path = format!("config.json key `{key}`");
                if !known.contains(key.as_str()) {
                    let message = format!("{} (written to {name} as {var_path})", unknown_key_message(&key, &known));
                    r.push_in(at, Severity::Error, path, message);
                } else if key == "drain_timeout" {
                    let source = format!("`drain_timeout` = {expr} in {recipe}:{line}");
                    drain = unquote(&expr).filter(|s| !s.contains("#{")).and_then(|s| literal_duration(s, &source));
                }
            }
        }
        if !checked {
            r.push_in(
                file,
                Severity::Warning,
                "config.json".into(),
                "found no keys in this template: not checked".into(),
            );
        }
    }

    for (name, text) in cookbook.templates.iter().filter(|(n, _)| n.ends_with(".service.erb")) {
        let text = &without_erb_comments(text);
        let file = format!("{}/{name}", cookbook.dir);
        let mut stop: Option<(String, usize)> = None;
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if let Some(value) = line.trim().strip_prefix("ExecStart=") {
                check_exec_start(format!("{file}:{line_no}"), value, binary, &mut r);
            } else if let Some(value) = line.trim().strip_prefix("TimeoutStopSec=") {
                stop = Some((value.trim().to_string(), line_no));
            }
        }
        check_stop(&file, stop, drain.as_ref(), longest, &mut r);
    }
    r.findings
}

/// A duration written as a string literal (`'30s'`), or `None` (unknown).
fn literal_duration(text: &str, source: &str) -> Option<(Duration, String)> {
    parse_duration(text).ok().map(|d| (d, source.to_string()))
}

/// The unit's `TimeoutStopSec` (unset: systemd's DefaultTimeoutStopSec, 90s)
/// against the drain budget plus the longest step.
fn check_stop(
    file: &str,
    stop: Option<(String, usize)>,
    drain: Option<&(Duration, String)>,
    longest: Option<&LongestStep>,
    r: &mut Report,
) {
    let (value, at, unset) = match stop {
        Some((value, line)) => (value, format!("{file}:{line}"), false),
        None => ("90s".to_string(), file.to_string(), true),
    };
    let path = "TimeoutStopSec".to_string();
    if value == "infinity" || value.contains("<%") {
        return; // never killed; or computed by Ruby (checked on the render)
    }
    let Some(seconds) = systemd_seconds(&value) else {
        r.push_in(at, Severity::Warning, path, format!("cannot read `{value}` as a number of seconds: not checked"));
        return;
    };
    let Some((drain, drain_source)) = drain else {
        let message = format!(
            "{value} not checked: the config's `drain_timeout` is computed by Ruby, which only rendering evaluates"
        );
        r.push_in(at, Severity::Warning, path, message);
        return;
    };
    let shown = if unset { format!("{seconds}s (unset: systemd's default)") } else { format!("{seconds}s") };
    if let Some(problem) = grace_problem(seconds, *drain, drain_source, longest) {
        r.push_in(at, Severity::Error, path, format!("{shown}: {problem}"));
    }
}

/// `90`, `90s`, `2min`, `1h` in seconds (one number and one unit, as units
/// write it in practice).
fn systemd_seconds(value: &str) -> Option<i64> {
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    let number = digits.parse::<i64>().ok()?;
    let factor = match value[digits.len()..].trim() {
        "" | "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hr" | "hour" | "hours" => 3600,
        _ => return None,
    };
    Some(number * factor)
}

fn unknown_key_message(key: &str, known: &BTreeSet<&str>) -> String {
    let hint = sqsaga_config::suggest(key, known.iter().copied())
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    format!("`{key}`{hint} is not a key the binary reads: `sqsaga config check` would refuse the file")
}

fn check_exec_start(at: String, value: &str, binary: &Binary<'_>, r: &mut Report) {
    let path = "ExecStart".to_string();
    let original = value.trim_start_matches(['@', '-', ':', '+', '!']);
    let mut line = original.to_string();
    let tags = erb_tags(&line);
    let first_is_tag = tags.first().is_some_and(|(_, _, range)| range.start == 0);
    for (_, _, range) in tags.iter().rev() {
        line.replace_range(range.clone(), "0");
    }
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let Some((program, args)) = words.split_first() else {
        r.push_in(at, Severity::Error, path, "empty".into());
        return;
    };
    if !first_is_tag && !basename(program).starts_with("sqsaga") {
        r.push_in(at, Severity::Warning, path, format!("runs `{program}`, not the sqsaga binary: not checked"));
        return;
    }
    match (binary.parse_command_line)(args) {
        Ok(Invocation { role: Role::Worker | Role::Orchestrator, .. }) => {}
        Ok(Invocation { role: Role::Other(name), .. }) => {
            let message = format!("runs `sqsaga {name}`, neither `orchestrator` nor `worker`");
            r.push_in(at, Severity::Warning, path, message);
        }
        Err(message) => {
            let message = format!("`{original}` is not a command line this binary accepts: {message}");
            r.push_in(at, Severity::Error, path, message);
        }
    }
}

// ---------------------------------------------------------------------------
// Reading (not evaluating) Ruby and ERB

/// Ruby source without its trailing comment (`#` outside a string).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, ch) in line.char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(ch),
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Removes `#` comments from each line of a block (lines kept, so line numbers hold).
fn strip_comments_block(text: &str) -> String {
    text.lines().map(strip_comment).collect::<Vec<_>>().join("\n")
}

/// Splits at top-level `sep` (outside strings and brackets).
fn split_top(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0i32, None, false, 0);
    for (i, ch) in text.char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// The text between the bracket opening at byte `open` and its match.
fn bracketed(text: &str, open: usize) -> Option<&str> {
    let (mut depth, mut quote, mut escaped) = (0i32, None, false);
    for (i, ch) in text.get(open..)?.char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return text.get(open + 1..open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The content of a quoted string literal.
fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    let q = s.chars().next()?;
    (matches!(q, '\'' | '"') && s.len() >= 2 && s.ends_with(q)).then(|| &s[1..s.len() - 1])
}

/// `'key' => expr`, `"key" => expr`, `:key => expr` or `key: expr`.
fn hash_entry(entry: &str) -> Option<(String, String)> {
    let entry = entry.trim();
    if entry.is_empty() {
        return None;
    }
    let parts = split_top(entry, '=');
    if parts.len() >= 2 && parts[1].starts_with('>') {
        let key = parts[0].trim();
        let key = unquote(key).or_else(|| key.strip_prefix(':'))?;
        let rest = entry.split_once("=>")?.1;
        return Some((key.to_string(), rest.trim().to_string()));
    }
    let (key, rest) = entry.split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !rest.starts_with(':'))
        .then(|| (key.to_string(), rest.trim().to_string()))
}

/// One entry of a Ruby hash literal.
struct HashKey {
    key: String,
    /// The value's Ruby expression, as written.
    expr: String,
    /// 1-based line of the key in the recipe.
    line: usize,
}

/// A `template ... do ... end` resource of a recipe.
struct TemplateResource {
    recipe: String,
    source: String,
    /// `variables(name: expr, ...)`, expressions as written.
    variables: BTreeMap<String, String>,
}

/// `name = { ... }` in a recipe: the recipe file and the entries of the literal.
fn hash_literal<'c>(cookbook: &'c Cookbook, name: &str) -> Option<(&'c str, Vec<HashKey>)> {
    for (file, text) in &cookbook.recipes {
        // Comments out (a quote in a comment would derail the scan); lines kept.
        let code = strip_comments_block(text);
        let mut offset = 0;
        for line in code.split_inclusive('\n') {
            let rest = line.trim_start().strip_prefix(name).map(str::trim_start);
            let value = rest.and_then(|r| r.strip_prefix('=')).map(str::trim_start);
            if value.is_some_and(|v| v.starts_with('{')) {
                let open = offset + line.find('{')?;
                let body = bracketed(&code, open)?;
                let body_start = open + 1;
                let mut out = Vec::new();
                let mut entry_start = body_start;
                for entry in split_top(body, ',') {
                    if let Some((key, expr)) = hash_entry(entry) {
                        let start = entry_start + (entry.len() - entry.trim_start().len());
                        let line = code[..start].matches('\n').count() + 1;
                        out.push(HashKey { key, expr, line });
                    }
                    entry_start += entry.len() + 1; // the entry and its comma
                }
                return Some((file.as_str(), out));
            }
            offset += line.len();
        }
    }
    None
}

/// The `template` resources of the recipes: their source and variables.
fn templates(cookbook: &Cookbook) -> Vec<TemplateResource> {
    let mut out = Vec::new();
    for (file, text) in &cookbook.recipes {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let code = strip_comment(lines[i]);
            let indent = code.len() - code.trim_start().len();
            let trimmed = code.trim();
            if !(trimmed.starts_with("template ") && trimmed.ends_with(" do")) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < lines.len() {
                let l = strip_comment(lines[j]);
                if l.trim() == "end" && l.len() - l.trim_start().len() == indent {
                    break;
                }
                j += 1;
            }
            let body: String =
                lines[i + 1..j.min(lines.len())].iter().map(|l| strip_comment(l)).collect::<Vec<_>>().join("\n");
            let mut resource =
                TemplateResource { recipe: file.clone(), source: String::new(), variables: BTreeMap::new() };
            for l in body.lines() {
                if let Some(src) = l.trim().strip_prefix("source ").and_then(unquote) {
                    resource.source = src.to_string();
                }
            }
            if let Some(at) = body.find("variables(")
                && let Some(inner) = bracketed(&body, at + "variables".len())
            {
                for entry in split_top(inner, ',') {
                    if let Some((k, v)) = hash_entry(entry) {
                        resource.variables.insert(k, v);
                    }
                }
            }
            out.push(resource);
            i = j + 1;
        }
    }
    out
}

/// `<% %>` tags of a template (not `<%# %>` comments): the expression,
/// whether it outputs (`<%=`), and the byte range of the tag.
fn erb_tags(text: &str) -> Vec<(String, bool, Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = text[pos..].find("<%").map(|s| s + pos) {
        let Some(end) = text[start..].find("%>").map(|e| e + start + 2) else { break };
        let inner = text[start + 2..end - 2].trim_start_matches(['-']).trim_end_matches('-');
        if !inner.starts_with('#') {
            let output = inner.starts_with('=');
            out.push((inner.trim_start_matches('=').trim().to_string(), output, start..end));
        }
        pos = end;
    }
    out
}

/// The template without its `<%# comment %>` tags (their newlines kept, so
/// line numbers hold).
fn without_erb_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<%#") {
        let Some(len) = rest[start..].find("%>") else { break };
        out.push_str(&rest[..start]);
        out.extend(rest[start..start + len].matches('\n'));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The instance variable a template expression serialises as a whole JSON value.
fn serialised_variable(expr: &str) -> Option<String> {
    let var_after = |s: &str| -> Option<String> {
        let name: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        (!name.is_empty()).then_some(name)
    };
    for call in ["JSON.pretty_generate(@", "JSON.generate(@", "JSON.dump(@"] {
        if let Some(rest) = expr.split_once(call).map(|(_, r)| r) {
            let name = var_after(rest)?;
            return rest[name.len()..].trim_start().starts_with(')').then_some(name);
        }
    }
    let rest = expr.trim().strip_prefix('@')?;
    let name = var_after(rest)?;
    (rest[name.len()..].trim() == ".to_json").then_some(name)
}

/// `"key":` occurrences in a JSON-ish text: the key, its line, and the value
/// when it is a string literal.
fn json_keys(text: &str) -> Vec<(String, usize, Option<String>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let string_end = |start: usize| {
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        j
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let j = string_end(start);
        let after = text.get(j + 1..).unwrap_or("").trim_start();
        if let Some(value) = after.strip_prefix(':') {
            let key = text.get(start..j).unwrap_or("").to_string();
            let value = value.trim_start();
            let string = value.strip_prefix('"').and_then(|v| v.split_once('"')).map(|(s, _)| s.to_string());
            out.push((key, text[..start].matches('\n').count() + 1, string));
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests;
