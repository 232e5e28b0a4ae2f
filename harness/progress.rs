//! Progress for long waits: an indicatif spinner on a terminal, silence otherwise.
//!
//! A waiting harness must say what it waits for; a CI log must not fill with spinner
//! frames, so nothing is drawn when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The harness's one spinner style: what is being waited for, and the elapsed time.
pub fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .expect("static template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner that names what is being waited for and shows the elapsed time.
pub struct Waiting {
    bar: ProgressBar,
}

impl Waiting {
    /// Start a spinner with `msg`, hidden when stderr is not a terminal.
    pub fn new(msg: impl Into<String>) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(msg.into());
        Waiting { bar }
    }

    /// Change what the spinner says.
    pub fn set(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// A callback form of [`Waiting::set`], for layers that report progress as text.
    pub fn reporter(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |msg: &str| bar.set_message(msg.to_string())
    }

    /// Print a line above the spinner (or plainly, when hidden).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
