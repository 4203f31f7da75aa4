use clap::{Parser, Subcommand};

use super::*;

/// A command shaped like Gembok's: flags with values and variables, a switch, a short flag, a
/// subcommand with flags of its own.
#[derive(Debug, Parser)]
#[command(name = "tool", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[arg(long, env = "CLIARGS_TEST_ADMIN", default_value = "127.0.0.1:1")]
    admin: String,
    #[arg(long, default_value = "10s")]
    grace: String,
    #[arg(long, value_delimiter = ';')]
    inbound: Vec<String>,
    #[arg(long, env = "CLIARGS_TEST_FORCE")]
    force: bool,
    #[arg(short = 'f', long, default_value = "-")]
    file: String,
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    format: String,
}

#[derive(Debug, Subcommand)]
enum Sub {
    WaitReady {
        #[arg(long, default_value = "120s")]
        timeout: String,
    },
    /// An internal subcommand, never offered.
    #[command(hide = true)]
    Internal,
}

fn run(args: &[&str]) -> Result<(Cli, Vec<String>, Sources), Vec<String>> {
    match parse::<Cli>(std::iter::once("tool").chain(args.iter().copied())) {
        Parsed::Read(cli, problems, sources) => Ok((cli, problems, sources)),
        Parsed::Unreadable(problems) => Err(problems),
        Parsed::Info(e) => panic!("unexpected --help/--version: {e}"),
    }
}

fn problems(args: &[&str]) -> Vec<String> {
    match run(args) {
        Ok((_, problems, _)) | Err(problems) => problems,
    }
}

#[test]
fn a_good_command_line_has_no_problems() {
    let (cli, problems, _) = run(&["--admin", ":2", "--inbound", "a;b", "--force"]).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cli.admin, ":2");
    assert_eq!(cli.inbound, ["a", "b"]);
    assert!(cli.force);
}

#[test]
fn every_unknown_flag_is_reported_and_the_rest_still_parses() {
    let (cli, problems, _) = run(&[
        "--frobnicate",
        "--admin",
        ":3",
        "--gracee=1s",
        "--bogus",
        "value",
        "--grace",
        "2s",
    ])
    .unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("--frobnicate: unknown flag"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("--gracee: unknown flag; did you mean --grace?"),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with("--bogus: unknown flag"),
        "{problems:?}"
    );
    // The unknown flag's value went with it; what was right was still read.
    assert_eq!((cli.admin.as_str(), cli.grace.as_str()), (":3", "2s"));
}

#[test]
fn a_value_starting_with_a_dash_belongs_to_its_flag() {
    // clap alone reads `-5s` as the short flags -5 and -s, and never names --grace.
    let (cli, problems, _) = run(&["--grace", "-5s", "--inbound", "-x", "--bogus"]).unwrap();
    assert_eq!(problems, ["--bogus: unknown flag"]);
    assert_eq!(cli.grace, "-5s");
    assert_eq!(cli.inbound, ["-x"]);
    // The subcommand's flags too.
    let (cli, problems, _) = run(&["wait-ready", "--timeout", "-1s"]).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let Some(Sub::WaitReady { timeout }) = cli.command else {
        panic!("no subcommand")
    };
    assert_eq!(timeout, "-1s");
}

#[test]
fn a_flag_of_the_command_is_never_taken_as_a_value() {
    // The operator forgot --admin's value: --grace is a flag, -f a known short flag.
    let problems = problems(&["--grace", "--admin", "1s", "--file", "-f", "x"]);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("--grace: needs a value")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("--file: needs a value")),
        "{problems:?}"
    );
}

#[test]
fn values_outside_a_fixed_set_name_the_set() {
    let problems = problems(&["--format", "yaml", "--bogus"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p == "--bogus: unknown flag"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("--format: `yaml` is not a valid value (one of text, json)")),
        "{problems:?}"
    );
}

#[test]
fn a_flag_given_twice_and_a_stray_word_are_named() {
    let problems = problems(&["--admin", ":1", "--admin", ":2", "stray"]);
    // The second value is not taken for a stray word of its own.
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p == "--admin: given more than once"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "stray: unexpected word (the subcommands are wait-ready)"),
        "{problems:?}"
    );
}

#[test]
fn a_value_given_to_a_switch_is_named() {
    assert_eq!(
        problems(&["--force=maybe", "--bogus"]),
        [
            "--force: takes no value (got `maybe`)",
            "--bogus: unknown flag"
        ]
    );
}

#[test]
fn help_and_version_are_information() {
    for flag in ["--help", "--version"] {
        assert!(matches!(
            parse::<Cli>(["tool", flag]),
            Parsed::Info(e) if !e.use_stderr()
        ));
    }
}

/// Variables are process-wide: the one test that sets them.
#[test]
fn problems_with_values_from_the_environment_name_the_variable() {
    // Setting variables in this process would race the other tests (and needs `unsafe` in
    // edition 2024): the test runs itself again in a child process that has them set.
    let exe = std::env::current_exe().unwrap();
    if std::env::var_os("CLIARGS_TEST_CHILD").is_none() {
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "tests::problems_with_values_from_the_environment_name_the_variable",
                "--nocapture",
            ])
            .env("CLIARGS_TEST_CHILD", "1")
            .env("CLIARGS_TEST_ADMIN", "nowhere")
            .env("CLIARGS_TEST_FORCE", "maybe")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    // A switch's variable that does not parse: clap's own problem names the variable.
    let found = problems(&[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("CLIARGS_TEST_FORCE (--force): `maybe`"),
        "{found:?}"
    );
    // ... and the rest is still read, into the right fields, for the binary's own checks.
    let (cli, found, _) = run(&["--grace", "7s", "--file", "f", "--bogus"]).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|p| p.starts_with("--bogus")), "{found:?}");
    assert_eq!((cli.grace.as_str(), cli.file.as_str()), ("7s", "f"));
    assert!(!cli.force);
    // A value the binary checks later: its problem line is attributed through Sources.
    let (cli, _, sources) = run(&["--force"]).unwrap();
    assert_eq!(cli.admin, "nowhere");
    assert_eq!(
        sources.attribute("--admin: `nowhere` is not an address"),
        "CLIARGS_TEST_ADMIN (--admin): `nowhere` is not an address"
    );
    // Typed on the command line, the flag is named as typed.
    let (_, _, sources) = run(&["--force", "--admin", "x"]).unwrap();
    assert_eq!(
        sources.attribute("--admin: `x` is not an address"),
        "--admin: `x` is not an address"
    );
    assert_eq!(sources.attribute("no flag here"), "no flag here");
    let (_, _, sources) = run(&["--force"]).unwrap();
    assert_eq!(
        sources.attribute("--admin \"nowhere\" is not an address"),
        "CLIARGS_TEST_ADMIN (--admin) \"nowhere\" is not an address"
    );
    assert_eq!(sources.attribute("--admin-x: y"), "--admin-x: y");
}

#[test]
fn usage_adds_the_binarys_own_problems_and_reports_them_all_at_once() {
    let read = |args: &[&str]| {
        read_from::<Cli>("tool", std::iter::once("tool").chain(args.iter().copied()))
    };
    let (_, usage) = read(&[]).unwrap();
    assert_eq!(usage.finish(Some(7)).unwrap(), 7);

    let (_, mut usage) = read(&["--bogus", "--grace", "x"]).unwrap();
    usage.add(["--grace: \"x\" is not a duration"]);
    assert_eq!(
        usage.problems(),
        ["--bogus: unknown flag", "--grace: \"x\" is not a duration"]
    );
    // A problem of the binary's own makes the command line unusable even when clap had none.
    let (_, mut usage) = read(&[]).unwrap();
    usage.add(["--admin: not an address"]);
    assert!(usage.finish(Some(())).is_err());
    // A value that cannot be built is a problem too, even when none was listed.
    let (_, usage) = read(&[]).unwrap();
    assert!(usage.finish(None::<()>).is_err());
    // --help is printed, not a problem.
    assert!(read(&["--help"]).is_err());
}

#[test]
fn every_binary_reports_problems_in_one_shape() {
    assert_eq!(
        describe(
            "tool wait-ready",
            &["--timeout: 0s is not more than 0".to_owned()]
        ),
        "tool wait-ready: invalid configuration (1 problem):\n  --timeout: 0s is not more than 0\n\
         Run `tool wait-ready --help` for usage.\n"
    );
    let two = describe("tool", &["a".to_owned(), "b".to_owned()]);
    assert!(
        two.starts_with("tool: invalid configuration (2 problems):\n  a\n  b\n"),
        "{two}"
    );
}
