//! Cookbook checks by table: a cookbook shaped like the shipped one, one
//! change at a time, and the findings that come out.

use std::time::Duration;

use super::*;
use crate::testing::binary;

/// A recipe like the shipped one: the config is a hash literal, the drain
/// and the stop budget computed by Ruby (so not checked here).
fn cookbook(recipe_extra: &str, drain: &str, unit_stop: &str) -> Cookbook {
    Cookbook {
        dir: "cb".into(),
        recipes: vec![(
            "recipes/default.rb".into(),
            format!(
                "sqsaga = node['sqsaga']\n\
                 drain_seconds = Integer(sqsaga['drain_timeout_seconds'])\n\
                 stop = drain_seconds + Integer(sqsaga['margin']) # seconds\n\
                 config = {{\n  'queue_url' => 'https://q', # comment, with a comma\n  'drain_timeout' => {drain},\n\
                 {recipe_extra}}}.reject {{ |_k, v| v.nil? }}\n\
                 template '/etc/sqsaga/config.json' do\n  source 'config.json.erb'\n  variables(config: config)\nend\n\
                 template '/etc/systemd/system/sqsaga.service' do\n  source 'sqsaga.service.erb'\n  variables(\n    \
                 service: 'inventory',\n    stop: stop\n  )\nend\n"
            ),
        )],
        templates: vec![
            ("templates/config.json.erb".into(), "<%# comment -%>\n<%= JSON.pretty_generate(@config) %>\n".into()),
            (
                "templates/sqsaga.service.erb".into(),
                format!("[Service]\nExecStart=/opt/sqsaga worker --service <%= @service %>\n{unit_stop}"),
            ),
        ],
    }
}

const COMPUTED: &str = "\"#{drain_seconds}s\"";

#[test]
fn cookbook_findings() {
    let step = LongestStep { timeout: Duration::from_secs(10), source: "defs".into() };
    let too_short = "cb/templates/sqsaga.service.erb:3: TimeoutStopSec: 35s: must exceed";
    let unset = "cb/templates/sqsaga.service.erb: TimeoutStopSec: 90s (unset: systemd's default): must exceed";
    let exec = "cb/templates/sqsaga.service.erb:1: ExecStart: `/opt/sqsaga worker --servce x` is not a command line";
    // (case, cookbook, findings as printed: one needle list per finding)
    let cases: Vec<(&str, Cookbook, Vec<Vec<&str>>)> = vec![
        ("shipped shape", cookbook("", COMPUTED, "TimeoutStopSec=<%= @stop %>s\n"), vec![]),
        (
            "misspelt key, even with a nil value",
            cookbook("  'queue_ur' => item['nope'],\n", COMPUTED, "TimeoutStopSec=<%= @stop %>s\n"),
            vec![vec!["cb/recipes/default.rb:7: config.json key `queue_ur`", "did you mean `queue_url`", "as @config"]],
        ),
        (
            "literal stop, literal drain: too short",
            cookbook("", "'30s'", "TimeoutStopSec=35s\n"),
            vec![vec![too_short, "= 40s", "`drain_timeout` = '30s'"]],
        ),
        ("literal stop, literal drain: enough", cookbook("", "'30s'", "TimeoutStopSec=1min\n"), vec![]),
        ("unset stop is systemd's 90s", cookbook("", "'90s'", ""), vec![vec![unset]]),
        (
            "literal stop, drain computed by Ruby",
            cookbook("", COMPUTED, "TimeoutStopSec=35s\n"),
            vec![vec!["TimeoutStopSec: warning: 35s not checked", "computed by Ruby"]],
        ),
        ("infinity", cookbook("", "'30s'", "TimeoutStopSec=infinity\n"), vec![]),
        (
            "bad ExecStart flag",
            {
                let mut c = cookbook("", COMPUTED, "");
                c.templates[1].1 = "ExecStart=/opt/sqsaga worker --servce x\nTimeoutStopSec=<%= @stop %>\n".into();
                c
            },
            vec![vec![exec, "--servce"]],
        ),
        (
            "literal JSON template",
            {
                let mut c = cookbook("", COMPUTED, "TimeoutStopSec=35s\n");
                c.templates[0].1 = "{\n  \"queue_url\": \"<%= @q %>\",\n  \"drain_timout\": \"30s\"\n}\n".into();
                c
            },
            vec![
                vec!["cb/templates/config.json.erb:3: config.json key `drain_timout`", "did you mean `drain_timeout`"],
                // The drain is the binary's default (30s) then: 35s < 40s.
                vec![too_short, "the default of `drain_timeout`"],
            ],
        ),
    ];
    for (case, cb, want) in &cases {
        let got: Vec<String> = lint_cookbook(cb, Some(&step), &binary()).iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), want.len(), "{case}: {got:#?}");
        for (line, needles) in got.iter().zip(want) {
            for needle in needles {
                assert!(line.contains(needle), "{case}: `{needle}` not in {line}");
            }
        }
    }
}

#[test]
fn reading_ruby_and_erb() {
    assert_eq!(strip_comment("a = '#x' # c"), "a = '#x' ");
    assert_eq!(strip_comment("\"#{a}s\" # c"), "\"#{a}s\" ");
    assert_eq!(serialised_variable("JSON.pretty_generate(@config)").as_deref(), Some("config"));
    assert_eq!(serialised_variable("@config.to_json").as_deref(), Some("config"));
    assert_eq!(serialised_variable("@config['a'].to_json"), None);
    let keys: Vec<(String, usize, Option<String>)> = json_keys("{\n  \"a\": 0,\n  \"b\" : \"c:\"\n}");
    assert_eq!(keys, [("a".into(), 2, None), ("b".into(), 3, Some("c:".into()))]);
    assert_eq!(without_erb_comments("a<%# \"x\": 1\n -%>b"), "a\nb");
    assert_eq!(hash_entry(" 'k' => v['x'] "), Some(("k".into(), "v['x']".into())));
    assert_eq!(hash_entry("k: 1").map(|(k, _)| k).as_deref(), Some("k"));
    assert_eq!(systemd_seconds("90"), Some(90));
    assert_eq!(systemd_seconds("2min"), Some(120));
    assert_eq!(systemd_seconds("1min 30s"), None);
}
