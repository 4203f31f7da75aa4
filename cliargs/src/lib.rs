//! Reads a command line with clap without stopping at its first problem, for every Gembok binary.
//!
//! clap returns one error and stops. Here each unknown flag, flag without its value or stray word
//! is reported on a line of its own that starts with the flag (or word), dropped, and the rest is
//! read again; the binary then adds what its own checks of the values find and exits 64 once,
//! with every problem listed.
//!
//! Two more things clap gets wrong for an operator:
//! - A value that starts with `-` (`--drain-grace -5s`, `--services -pay`) is read as a value of
//!   the flag before it, not as an unknown short flag that hides the flag it belongs to. A word
//!   that is one of the command's own flags is still a flag (`--admin --workers 2` lacks a value).
//! - A problem with a value taken from an environment variable names the variable
//!   ([`Sources::attribute`]), since the operator never typed the flag.
//!
//! [`read`] is the whole edge for a binary: help and version printed (exit 0), every problem
//! printed the same way in every Gembok binary and exit 64 ([`Usage::finish`], [`report`]).

#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::error::Error as _;
use std::ffi::{OsStr, OsString};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Command, Parser};

/// What [`parse`] made of a command line.
#[derive(Debug)]
pub enum Parsed<C> {
    /// The command line; the problems found on the way (each offending word was dropped so that
    /// the rest could still be read); and where each value came from.
    Read(C, Vec<String>, Sources),
    /// Problems that left nothing to read further.
    Unreadable(Vec<String>),
    /// `--help` or `--version`: print this and exit 0.
    Info(clap::Error),
}

/// Parses `args` (program name first) as `C`, listing every problem clap finds.
pub fn parse<C: Parser>(args: impl IntoIterator<Item = impl Into<OsString>>) -> Parsed<C> {
    let mut command = C::command();
    command.build();
    let shape = Shape::of(&command);
    let mut args = shape.join_dash_values(args.into_iter().map(Into::into).collect());
    let mut problems = Vec::new();
    let mut dropped_env = BTreeSet::new();
    loop {
        let error = match command.try_get_matches_from_mut(&args) {
            Ok(matches) => match C::from_arg_matches(&matches) {
                Ok(cli) => {
                    let sources = Sources::of(&shape, &matches);
                    return Parsed::Read(cli, problems, sources);
                }
                Err(e) => e,
            },
            Err(e) if !e.use_stderr() => return Parsed::Info(e),
            Err(e) => e,
        };
        problems.push(shape.describe(&error, &args));
        match shape.offending_word(&error, &args) {
            // Drop it and read the rest again (at most as many rounds as there are words).
            Some(index) if problems.len() < args.len() => {
                // An unknown `--flag value`, or a flag with a bad value in the next word: the
                // value goes too (it is not a stray word).
                let word = args[index].to_string_lossy();
                let next = args.get(index + 1);
                let separate = word.starts_with("--") && !word.contains('=');
                let takes_next = separate
                    && match error.kind() {
                        ErrorKind::UnknownArgument => {
                            next.is_some_and(|next| !shape.is_flag_like(next))
                        }
                        // `--flag v1 --flag v2`: the second value goes with its flag.
                        ErrorKind::ArgumentConflict => next.is_some_and(|_| {
                            word.strip_prefix("--")
                                .is_some_and(|name| shape.valued.contains(name))
                        }),
                        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
                            let value = error.get(ContextKind::InvalidValue);
                            next.zip(value).is_some_and(|(next, value)| {
                                matches!(value, ContextValue::String(v) if next.to_str() == Some(v))
                            })
                        }
                        _ => false,
                    };
                if takes_next {
                    args.remove(index + 1);
                }
                args.remove(index);
            }
            // A bad value from an environment variable: read on without the variable (each
            // at most once), so that every other problem is still found.
            _ => match shape.env_arg(&error, &args) {
                Some((path, id)) if dropped_env.insert((path.clone(), id.clone())) => {
                    // Anew, then built: an argument changed after `build` would be read into
                    // another one's field (clap moves it to the end of its list).
                    command = dropped_env
                        .iter()
                        .fold(C::command(), |command, (path, id)| {
                            without_env(command, path, id)
                        });
                    command.build();
                }
                _ => return Parsed::Unreadable(problems),
            },
        }
    }
}

/// sysexits' EX_USAGE: the command was used incorrectly.
pub const EX_USAGE: u8 = 64;

/// The problems with a command line so far, to which a binary adds what its own checks of the
/// values find before [`Usage::finish`].
#[derive(Debug)]
pub struct Usage {
    program: String,
    problems: Vec<String>,
    sources: Sources,
}

/// Reads the process's command line as `C` for `program` (the name problems start with, such
/// as `gembok-proxy`). `Err` is the exit code once `--help`/`--version` or a command line with
/// nothing more to read has been printed.
pub fn read<C: Parser>(program: &str) -> Result<(C, Usage), std::process::ExitCode> {
    read_from(program, std::env::args_os())
}

/// [`read`] from `args` (program name first).
pub fn read_from<C: Parser>(
    program: &str,
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<(C, Usage), std::process::ExitCode> {
    match parse::<C>(args) {
        Parsed::Read(cli, problems, sources) => Ok((
            cli,
            Usage {
                program: program.to_owned(),
                problems,
                sources,
            },
        )),
        Parsed::Unreadable(problems) => Err(report(program, &problems)),
        Parsed::Info(info) => {
            let _ = info.print();
            Err(std::process::ExitCode::SUCCESS)
        }
    }
}

impl Usage {
    /// Adds problems found by the binary's own checks, each starting with its flag; a value
    /// from an environment variable is named after the variable ([`Sources::attribute`]).
    pub fn add<S: AsRef<str>>(&mut self, problems: impl IntoIterator<Item = S>) {
        let sources = &self.sources;
        self.problems
            .extend(problems.into_iter().map(|p| sources.attribute(p.as_ref())));
    }

    /// The same problems, reported as `program sub`'s (for a subcommand's own checks).
    pub fn within(mut self, sub: &str) -> Self {
        self.program = format!("{} {sub}", self.program);
        self
    }

    /// The problems so far.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// `value` when there is no problem; otherwise every problem printed and exit 64.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, std::process::ExitCode> {
        match value {
            Some(value) if self.problems.is_empty() => Ok(value),
            _ => Err(report(&self.program, &self.problems)),
        }
    }
}

/// Prints `problems` to standard error, one per line under a line that counts them, and
/// returns exit code 64.
pub fn report(program: &str, problems: &[String]) -> std::process::ExitCode {
    eprint!("{}", describe(program, problems));
    std::process::ExitCode::from(EX_USAGE)
}

/// What [`report`] prints.
pub fn describe(program: &str, problems: &[String]) -> String {
    let n = problems.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut text = format!("{program}: invalid configuration ({n} problem{plural}):\n");
    for problem in problems {
        text.push_str("  ");
        text.push_str(problem);
        text.push('\n');
    }
    text.push_str(&format!("Run `{program} --help` for usage.\n"));
    text
}

/// `command` with the argument `id` (in the subcommand at `path`) no longer read from its
/// environment variable.
fn without_env(command: Command, path: &[String], id: &str) -> Command {
    match path.split_first() {
        None => command.mut_arg(id, |arg| arg.env(None)),
        Some((sub, rest)) => command.mut_subcommand(sub, |s| without_env(s, rest, id)),
    }
}

/// Where the values of a command line came from, to name the right thing in a problem.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--flag` → its environment variable, for the flags whose value was taken from it.
    from_env: HashMap<String, String>,
}

impl Sources {
    /// A problem line that starts with a flag (`--workers: ...`, `--admin "x" is not ...`)
    /// names the variable too when the value came from the environment
    /// (`GEMBOK_WORKERS (--workers): ...`). Other lines are unchanged.
    pub fn attribute(&self, problem: &str) -> String {
        let end = problem
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(problem.len());
        let (flag, rest) = problem.split_at(end);
        match self.from_env.get(flag) {
            Some(var) if flag.starts_with("--") => format!("{var} ({flag}){rest}"),
            _ => problem.to_owned(),
        }
    }

    fn of(shape: &Shape, matches: &clap::ArgMatches) -> Self {
        let mut from_env = HashMap::new();
        let mut level = Some(matches);
        while let Some(m) = level {
            for id in m.ids() {
                let id = id.as_str();
                if m.value_source(id) == Some(clap::parser::ValueSource::EnvVariable)
                    && let Some((flag, var)) = shape.env_by_id.get(id)
                {
                    from_env.insert(flag.clone(), var.clone());
                }
            }
            level = m.subcommand().map(|(_, sub)| sub);
        }
        Self { from_env }
    }
}

/// The flags of a command and all its subcommands.
struct Shape {
    /// Long flags that take a value (`--admin`), without the dashes.
    valued: BTreeSet<String>,
    /// Every long flag, without the dashes.
    longs: BTreeSet<String>,
    shorts: BTreeSet<char>,
    /// Argument id → (`--flag`, environment variable).
    env_by_id: HashMap<String, (String, String)>,
    /// Long flag → environment variable.
    env_by_flag: HashMap<String, String>,
    /// Long flag with a variable → (subcommand path, argument id), to read on without it.
    env_arg_by_flag: HashMap<String, (Vec<String>, String)>,
    subcommands: Vec<String>,
}

impl Shape {
    fn of(command: &Command) -> Self {
        let mut shape = Self {
            valued: BTreeSet::new(),
            longs: BTreeSet::new(),
            shorts: BTreeSet::new(),
            env_by_id: HashMap::new(),
            env_by_flag: HashMap::new(),
            env_arg_by_flag: HashMap::new(),
            subcommands: command
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .map(|s| s.get_name().to_owned())
                .collect(),
        };
        shape.add(command, &[]);
        shape
    }

    fn add(&mut self, command: &Command, path: &[String]) {
        for arg in command.get_arguments() {
            if let Some(short) = arg.get_short() {
                self.shorts.insert(short);
            }
            let Some(long) = arg.get_long() else { continue };
            self.longs.insert(long.to_owned());
            let takes_value = !matches!(
                arg.get_action(),
                ArgAction::SetTrue
                    | ArgAction::SetFalse
                    | ArgAction::Count
                    | ArgAction::Help
                    | ArgAction::HelpShort
                    | ArgAction::HelpLong
                    | ArgAction::Version
            );
            if takes_value {
                self.valued.insert(long.to_owned());
            }
            if let Some(var) = arg.get_env().and_then(OsStr::to_str) {
                let flag = format!("--{long}");
                self.env_by_id
                    .insert(arg.get_id().to_string(), (flag.clone(), var.to_owned()));
                self.env_by_flag.insert(flag.clone(), var.to_owned());
                self.env_arg_by_flag
                    .insert(flag, (path.to_vec(), arg.get_id().to_string()));
            }
        }
        for sub in command.get_subcommands() {
            let mut sub_path = path.to_vec();
            sub_path.push(sub.get_name().to_owned());
            self.add(sub, &sub_path);
        }
    }

    /// The argument (subcommand path, id) whose value from its environment variable `error` is
    /// about, when that flag was not typed on the command line: reading on without the variable
    /// lets the rest of the command line be checked.
    fn env_arg(&self, error: &clap::Error, args: &[OsString]) -> Option<&(Vec<String>, String)> {
        let Some(ContextValue::String(word)) = error.get(ContextKind::InvalidArg) else {
            return None;
        };
        let flag = word.split_whitespace().next()?;
        let typed = args.iter().skip(1).any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        });
        (!typed).then(|| self.env_arg_by_flag.get(flag)).flatten()
    }

    /// Whether `word` is one of the command's own flags (or `--`), and so cannot be a value.
    fn is_flag(&self, word: &str) -> bool {
        if word == "--" {
            return true;
        }
        if let Some(long) = word.strip_prefix("--") {
            let name = long.split_once('=').map_or(long, |(name, _)| name);
            return self.longs.contains(name);
        }
        let mut chars = word.chars();
        chars.next() == Some('-') && chars.next().is_some_and(|c| self.shorts.contains(&c))
    }

    /// Whether `word` looks like a flag at all, known or not (a `-5s` value does not count when
    /// no `-5` short flag exists).
    fn is_flag_like(&self, word: &OsStr) -> bool {
        let word = word.to_string_lossy();
        self.is_flag(&word) || word.starts_with("--")
    }

    /// `--flag -value` becomes `--flag=-value` where `--flag` takes a value and `-value` is not
    /// one of the command's flags; clap would otherwise read `-value` as short flags.
    fn join_dash_values(&self, mut args: Vec<OsString>) -> Vec<OsString> {
        let mut i = 1;
        while i + 1 < args.len() {
            let joined = match (args[i].to_str(), args[i + 1].to_str()) {
                (Some(word), Some(next))
                    if word
                        .strip_prefix("--")
                        .is_some_and(|name| self.valued.contains(name))
                        && next.starts_with('-')
                        && next.len() > 1
                        && !self.is_flag(next) =>
                {
                    Some(OsString::from(format!("{word}={next}")))
                }
                _ => None,
            };
            if let Some(joined) = joined {
                args[i] = joined;
                args.remove(i + 1);
            }
            i += 1;
        }
        args
    }

    /// One line for a clap error, starting with the flag (or word) it is about.
    fn describe(&self, error: &clap::Error, args: &[OsString]) -> String {
        let context = |kind| match error.get(kind) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            Some(ContextValue::Strings(v)) => v.first().cloned(),
            _ => None,
        };
        let word = context(ContextKind::InvalidArg).unwrap_or_default();
        // `--flag <VALUE>` in clap's context.
        let flag = word
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let named = self.name(&flag, args);
        match error.kind() {
            ErrorKind::UnknownArgument if word.starts_with('-') => {
                let hint = context(ContextKind::SuggestedArg)
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_default();
                format!("{word}: unknown flag{hint}")
            }
            ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand => {
                let word = context(ContextKind::InvalidSubcommand).unwrap_or(word);
                match self.subcommands.as_slice() {
                    [] => format!("{word}: unexpected word (this command takes flags only)"),
                    subs => format!(
                        "{word}: unexpected word (the subcommands are {})",
                        subs.join(", ")
                    ),
                }
            }
            ErrorKind::InvalidValue | ErrorKind::NoEquals => {
                match context(ContextKind::InvalidValue).filter(|v| !v.is_empty()) {
                    Some(value) => {
                        let valid = match error.get(ContextKind::ValidValue) {
                            Some(ContextValue::Strings(v)) => format!(" (one of {})", v.join(", ")),
                            _ => String::new(),
                        };
                        format!("{named}: `{value}` is not a valid value{valid}")
                    }
                    None => format!("{named}: needs a value"),
                }
            }
            ErrorKind::ValueValidation => {
                let value = context(ContextKind::InvalidValue).unwrap_or_default();
                let why = error.source().map(|e| format!(": {e}")).unwrap_or_default();
                format!("{named}: `{value}` is not a valid value{why}")
            }
            ErrorKind::ArgumentConflict => match context(ContextKind::PriorArg) {
                Some(prior) if prior != word => format!("{flag}: cannot be used with {prior}"),
                _ => format!("{flag}: given more than once"),
            },
            // `--switch=value`: a switch takes none.
            ErrorKind::TooManyValues => {
                let value = context(ContextKind::InvalidValue).unwrap_or_default();
                format!("{named}: takes no value (got `{value}`)")
            }
            ErrorKind::MissingRequiredArgument => format!("{word}: required"),
            ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                format!("a subcommand is needed: {}", self.subcommands.join(", "))
            }
            _ => {
                // The first line of clap's own message, without its "error: " prefix.
                let rendered = error.render().to_string();
                let first = rendered.lines().next().unwrap_or_default();
                first.trim_start_matches("error: ").to_owned()
            }
        }
    }

    /// `--flag`, or `VAR (--flag)` when the flag is not on the command line and its variable is
    /// set: then the bad value came from the environment.
    fn name(&self, flag: &str, args: &[OsString]) -> String {
        let typed = args.iter().skip(1).any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        });
        match self.env_by_flag.get(flag) {
            Some(var) if !typed && std::env::var_os(var).is_some() => format!("{var} ({flag})"),
            _ => flag.to_owned(),
        }
    }

    /// Where the word clap complained about is in `args` (never the program name).
    fn offending_word(&self, error: &clap::Error, args: &[OsString]) -> Option<usize> {
        let word = match (
            error.get(ContextKind::InvalidArg),
            error.get(ContextKind::InvalidSubcommand),
        ) {
            (Some(ContextValue::String(word)), _) | (None, Some(ContextValue::String(word))) => {
                word
            }
            _ => return None,
        };
        // `--flag <VALUE>` in clap's context; the command line has `--flag` or `--flag=...`.
        let flag = word.split_whitespace().next()?;
        let matches = |a: &OsString| {
            let a = a.to_string_lossy();
            a == word.as_str() || a == flag || a.starts_with(&format!("{flag}="))
        };
        args.iter()
            .enumerate()
            .skip(1)
            .rev()
            .find(|(_, a)| matches(a))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests;
