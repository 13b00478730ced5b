//! Polling with a deadline and a message that says what was awaited and what was seen.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What one probe of [`wait_for`] found.
pub enum Check<T> {
    /// The condition holds; stop waiting and return this value.
    Done(T),
    /// Not yet; the text describes the current state for the timeout message.
    NotYet(String),
}

/// Calls `probe` every 100 ms until it returns [`Check::Done`] or `timeout` passes.
///
/// A probe error ends the wait at once (use it for "the process under test died");
/// a timeout returns an error naming `what` and the last [`Check::NotYet`] state.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Check<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match probe().with_context(|| format!("while waiting for {what}"))? {
            Check::Done(value) => return Ok(value),
            Check::NotYet(state) => state,
        };
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {:.1} s waiting for {what}\nlast state: {last}",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_done() {
        let mut calls = 0;
        let got = wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            Ok(if calls == 3 {
                Check::Done(calls)
            } else {
                Check::NotYet(format!("{calls} calls"))
            })
        });
        assert_eq!(got.expect("wait_for"), 3);
    }

    #[test]
    fn timeout_names_the_condition_and_last_state() {
        let err = wait_for::<()>("the impossible", Duration::from_millis(250), || {
            Ok(Check::NotYet("still impossible".into()))
        })
        .expect_err("must time out");
        let msg = format!("{err:#}");
        assert!(msg.contains("waiting for the impossible"), "{msg}");
        assert!(msg.contains("last state: still impossible"), "{msg}");
    }

    #[test]
    fn probe_error_stops_at_once() {
        let start = Instant::now();
        let err = wait_for::<()>("anything", Duration::from_secs(30), || bail!("agent died"))
            .expect_err("must fail");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(format!("{err:#}").contains("agent died"));
    }
}
