//! Colours for people at a terminal. Text is written with ANSI styles through [`stdout`],
//! an `anstream` stream that keeps them only on a terminal and drops them when `NO_COLOR`
//! is set (or `CLICOLOR=0`), when stdout is a pipe or a file, and on `CLICOLOR_FORCE`
//! keeps them anyway: scripts, tests and logs read plain text.

use anstyle::{AnsiColor, Style};

/// Standard output, styles kept only where colours belong.
pub fn stdout() -> anstream::AutoStream<std::io::Stdout> {
    anstream::stdout()
}

/// `text` in `style` (the stream decides whether the style reaches the screen).
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// The style of a decision in the tables: blocked red, recover green, waiting yellow.
pub fn decision(label: &str) -> Style {
    match label {
        "blocked" => AnsiColor::Red.on_default().bold(),
        "recover" => AnsiColor::Green.on_default(),
        "waiting" => AnsiColor::Yellow.on_default(),
        _ => Style::new(),
    }
}

/// The style of a boot verdict: unclean red, clean green, unknown yellow.
pub fn verdict(word: &str) -> Style {
    match word {
        "UNCLEAN" => AnsiColor::Red.on_default().bold(),
        "CLEAN" => AnsiColor::Green.on_default(),
        _ => AnsiColor::Yellow.on_default(),
    }
}

/// The style of a follow outcome: running again green, not back red.
pub fn outcome(label: &str) -> Style {
    match label {
        "running_again" => AnsiColor::Green.on_default().bold(),
        "not_back" => AnsiColor::Red.on_default().bold(),
        _ => Style::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn painted_text_is_plain_once_stripped() {
        let s = paint(decision("blocked"), "blocked");
        assert_ne!(s, "blocked", "a style is written");
        assert_eq!(anstream::adapter::strip_str(&s).to_string(), "blocked");
    }
}
