//! Progress of a long command (`check`, `repair`): a bar with the count,
//! the rate and the time left on a terminal (indicatif); a plain line every
//! ten seconds when stderr is a file or a pipe; nothing for a command that
//! is done before either would show.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use crate::sweep::Progress;

/// Shows `progress` on stderr until [`Shown::done`].
pub struct Shown {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// How often a plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub fn show(progress: Arc<Progress>, verb: &'static str) -> Shown {
    if std::io::stderr().is_terminal() {
        bar(progress, verb)
    } else {
        plain(progress, verb, Box::new(std::io::stderr()))
    }
}

/// The bar, on a terminal.
fn bar(progress: Arc<Progress>, verb: &'static str) -> Shown {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {wide_bar} {pos}/{len} projects, {per_sec}, {eta} left",
                )
                .expect("a valid template"),
            );
            bar.set_message(verb);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        let r = progress.read();
                        bar.set_length(r.total);
                        bar.set_position(r.done);
                    }
                }
            }
            bar.finish_and_clear();
        }
    });
    Shown { stop, task }
}

/// A line every [`PLAIN_EVERY`] to `out`.
fn plain(
    progress: Arc<Progress>,
    verb: &'static str,
    mut out: Box<dyn std::io::Write + Send>,
) -> Shown {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PLAIN_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    let _ = writeln!(out, "{verb}: {}", progress.read());
                }
            }
        }
    });
    Shown { stop, task }
}

impl Shown {
    /// The command is done: the bar goes.
    pub async fn done(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the plain lines wrote.
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_terminal_a_line_every_ten_seconds_and_none_for_a_short_command() {
        let progress = Arc::new(Progress::default());
        progress.start(40);
        let sink = Sink::default();
        let shown = plain(progress.clone(), "checking", Box::new(sink.clone()));
        for _ in 0..10 {
            progress.advance();
        }
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(sink.0.lock().unwrap().is_empty(), "nothing within 10 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with("checking: 10 of 40 projects (25%), "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
        shown.done().await;
    }
}
