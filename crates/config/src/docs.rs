//! The configuration reference, generated from [`SETTINGS`]: what
//! `sqsaga config docs` prints and what `docs/configuration.md` holds (a
//! test compares the two, so the docs cannot drift from the code).
//!
//! Pure text generation: no IO, and nothing here is hand-maintained per
//! setting — a new row in the table is documented by adding it.

use std::fmt::Write as _;

use crate::spec::{AWS_SDK_ENV_VARS, CONFIG_ENV, ENV_PREFIX, SETTINGS, SettingSpec};

/// The command that regenerates `docs/configuration.md`.
pub const REGENERATE: &str = "cargo run -q -p sqsaga-cli -- config docs > docs/configuration.md";

/// The Markdown reference of every setting, in table order.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail.
    let _ = write_reference(&mut out);
    out
}

fn write_reference(out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "<!-- Generated from the SETTINGS table in crates/config/src/spec.rs by `sqsaga config docs`.\n     \
         Do not edit by hand: change the table, then run\n     {REGENERATE}\n     \
         (a test fails while this file and the table differ). -->\n"
    )?;
    writeln!(out, "# Configuration reference\n")?;
    writeln!(
        out,
        "`sqsaga orchestrator` and `sqsaga worker` read their configuration at start from \
         command-line flags, environment variables and a JSON file, and report **every** problem \
         at once, naming the variable, key or flag, then exit with code 2 before touching a \
         queue. `sqsaga config check` prints the effective configuration (secrets redacted), \
         where each value came from, and the configuration hash the drift guard compares.\n"
    )?;
    writeln!(out, "## Sources and precedence\n")?;
    writeln!(out, "A setting takes the first value found, in this order: **flag > env > file > default**.\n")?;
    writeln!(
        out,
        "1. **Flags** — only for what an operator overrides by hand: {}, and `--config` (the file).",
        list(SETTINGS.iter().filter_map(|s| s.flag))
    )?;
    writeln!(
        out,
        "2. **Environment variables** — the Kubernetes path. The seed's names are kept: \
         `SQS_QUEUE_URL`, `REGION` and `LOG_LEVEL`; everything else is `{ENV_PREFIX}*`. \
         A few settings also read a fallback variable (`REGION` falls back to `AWS_REGION`), \
         which ranks below the primary one and above the file."
    )?;
    writeln!(
        out,
        "3. **JSON config file** — the Chef path, `/etc/<app>/config.json`, named by `--config` \
         or `{CONFIG_ENV}`. The seed's keys are kept: `queue_url`, `dlq_url`, `region`, \
         `log_level`; every setting has a key. Durations may be strings (`\"30s\"`) or whole \
         seconds (`30`), booleans are JSON booleans, integers JSON numbers."
    )?;
    writeln!(out, "4. **Defaults** — listed below.\n")?;
    writeln!(out, "Rules that hold for every source:\n")?;
    writeln!(out, "- An empty value (`FOO=`, `\"\"` or `null` in the file) means unset.")?;
    writeln!(
        out,
        "- Lower-ranked values are checked too: a bad line in config.json is reported even while \
         an environment variable hides it."
    )?;
    writeln!(
        out,
        "- An unknown `{ENV_PREFIX}*` variable and an unknown file key are errors (with a \
         \"did you mean\" when one is close); other variables are none of sqsaga's business."
    )?;
    writeln!(
        out,
        "- Secrets are never printed: reports show `<redacted>` and the configuration hash \
         carries only their sha256.\n"
    )?;

    writeln!(out, "## Summary\n")?;
    writeln!(out, "| Environment variable | File key | Flag | Default |")?;
    writeln!(out, "|---|---|---|---|")?;
    for s in SETTINGS {
        writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            env_names(s),
            s.key,
            s.flag.map(|f| format!("`{f}`")).unwrap_or_else(|| "—".to_string()),
            default_text(s)
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Settings\n")?;
    for s in SETTINGS {
        writeln!(out, "### `{}`\n", s.key)?;
        writeln!(out, "{}\n", s.doc)?;
        writeln!(out, "- Environment: {}", env_names(s))?;
        writeln!(out, "- Config file key: `{}`", s.key)?;
        if let Some(flag) = s.flag {
            writeln!(out, "- Flag: `{flag}`")?;
        }
        writeln!(out, "- Accepts: {}", s.kind.describe())?;
        writeln!(out, "- Default: {}", default_text(s))?;
        if s.secret {
            writeln!(out, "- Secret: never printed; only its sha256 enters the configuration hash.")?;
        }
        if s.per_instance {
            writeln!(out, "- Per instance: differs between replicas by design, so it is not hashed.")?;
        }
        writeln!(out)?;
    }

    writeln!(out, "## Variables of the AWS SDK\n")?;
    writeln!(
        out,
        "Accepted (and allowed in manifests by `sqsaga lint-deploy`) but never interpreted by \
         sqsaga: the AWS SDK's credential and region chains read them.\n"
    )?;
    for name in AWS_SDK_ENV_VARS {
        writeln!(out, "- `{name}`")?;
    }
    writeln!(out)?;

    writeln!(out, "## Example config.json (the Chef path)\n")?;
    writeln!(out, "```json")?;
    writeln!(out, "{{")?;
    writeln!(out, "  \"queue_url\": \"https://sqs.us-east-1.amazonaws.com/123456789012/sqsaga-inventory\",")?;
    writeln!(out, "  \"dlq_url\": \"https://sqs.us-east-1.amazonaws.com/123456789012/sqsaga-inventory-dlq\",")?;
    writeln!(out, "  \"region\": \"us-east-1\",")?;
    writeln!(out, "  \"log_level\": \"info\",")?;
    writeln!(out, "  \"backend\": \"aws\",")?;
    writeln!(out, "  \"service\": \"inventory\",")?;
    writeln!(out, "  \"drain_timeout\": \"25s\"")?;
    writeln!(out, "}}")?;
    writeln!(out, "```")?;
    Ok(())
}

/// The primary variable, then its fallbacks.
fn env_names(s: &SettingSpec) -> String {
    let mut text = format!("`{}`", s.env);
    if !s.env_fallbacks.is_empty() {
        text.push_str(&format!(" (then {})", list(s.env_fallbacks.iter().copied())));
    }
    text
}

fn default_text(s: &SettingSpec) -> String {
    match (s.default, s.key) {
        (Some(d), _) => format!("`{d}`"),
        (None, "instance_id") => "`<hostname>-<pid>`".to_string(),
        (None, _) => "unset".to_string(),
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented_with_its_names() {
        let text = reference_markdown();
        for s in SETTINGS {
            assert!(text.contains(&format!("### `{}`", s.key)), "{}", s.key);
            assert!(text.contains(&format!("`{}`", s.env)), "{}", s.env);
            assert!(text.contains(s.doc), "doc of {}", s.key);
        }
        for seed in ["SQS_QUEUE_URL", "REGION", "LOG_LEVEL", "queue_url", "dlq_url", "region", "log_level"] {
            assert!(text.contains(&format!("`{seed}`")), "{seed}");
        }
        assert!(text.contains("flag > env > file > default"));
    }
}
