//! Colours and progress (issue 26): `run` prints one progress line per VM as it starts and
//! as it ends, as plain lines when stdout is not a terminal; styles appear only where
//! colours belong (`CLICOLOR_FORCE` stands in for a terminal here) and never with
//! `NO_COLOR`.

use crate::e2e_support::Env;

const ESC: &str = "\u{1b}[";

async fn run_with(vars: &[(&str, &str)]) -> crate::e2e_support::Ran {
    let mut env = Env::power_loss().await;
    env.vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.run(&[
        "run",
        "--yes",
        "--no-follow",
        "--stuck-after",
        "0s",
        "--controller-grace",
        "1s",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_gets_plain_progress_lines() {
    let ran = run_with(&[]).await;
    assert_eq!(ran.code, 3, "{}", ran.all());
    assert!(!ran.stdout.contains(ESC), "{}", ran.stdout);
    assert!(!ran.stderr.contains(ESC), "{}", ran.stderr);
    assert!(ran.stdout.contains("\napplying:\n"), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains("  default/vm-db-01: freeing its launcher pod, waiting for the controllers, clearing finalizers\n"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.lines().any(
            |l| l.starts_with("  default/vm-db-01: pod freed, ") && l.ends_with(" → recovered")
        ),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colours_only_where_asked_and_never_with_no_color() {
    let forced = run_with(&[("CLICOLOR_FORCE", "1")]).await;
    assert_eq!(forced.code, 3, "{}", forced.all());
    assert!(
        forced.stdout.contains(&format!("{ESC}1m{ESC}31mblocked")),
        "the blocked decision in bold red: {}",
        forced.stdout
    );
    let no_color = run_with(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).await;
    assert_eq!(no_color.code, 3, "{}", no_color.all());
    assert!(!no_color.stdout.contains(ESC), "{}", no_color.stdout);
    assert!(no_color.stdout.contains("blocked"), "{}", no_color.stdout);
}
