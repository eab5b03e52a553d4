//! The full-screen terminal front end: sets the terminal up (raw mode,
//! alternate screen, bracketed paste) and always puts it back — on exit, on
//! error, on SIGTERM/SIGHUP and on panic — and runs the event loop that ties
//! keys, session updates and timers to the [`App`].
//!
//! # When the terminal goes away
//!
//! A dropped SSH session or a killed tmux server hangs the terminal up: the
//! kernel sends SIGHUP, and from then on every read of the tty returns end of
//! file or `EIO` at once. `crossterm`'s reader treats neither as an end and
//! reads again, for ever, inside one call: the thread that runs it can
//! neither be stopped nor joined. So the client never waits for that thread,
//! and learns that the terminal is gone by other means, any of which starts
//! the same clean leave (`USER_LEFT`, half-close) and ends the process:
//!
//! * SIGHUP or SIGTERM;
//! * stdin or stdout no longer being a terminal (on a hung-up tty every
//!   terminal `ioctl` fails, so `isatty` says no), checked every
//!   [`TTY_CHECK`];
//! * a failed draw (writing to a hung-up tty fails with `EIO`);
//! * the key reader ending (an error it did report).
//!
//! Once leaving, the session gets at most [`QUIT_GRACE`] to say goodbye;
//! when not in a room (still dialling, or waiting to reconnect) the client
//! ends at once.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use crossterm::execute;
use tokio::sync::mpsc;

use super::app::App;
use super::session::{self, Outgoing, SessionConfig, Update};
use super::view::Connection;
use super::{Options, render};
use crate::chat::DEFAULT_ROOM;

/// How often the key reader checks whether it should stop.
const KEY_POLL: Duration = Duration::from_millis(100);
/// The longest the loop sleeps without a reason to wake (typing expiry).
const TICK: Duration = Duration::from_secs(1);
/// How often the member list is asked for again while it is shown (joins
/// and leaves update it as they come; this catches what they do not:
/// `ChatStream` members naming themselves, listeners coming and going).
pub const MEMBERS_REFRESH: Duration = Duration::from_secs(5);
/// How often the loop checks that it still has a terminal.
pub const TTY_CHECK: Duration = Duration::from_millis(200);
/// How long the session may take to leave once asked (its own leave waits
/// at most [`session::LEAVE_TIMEOUT`] for the server; dialling may take
/// longer, and nobody is watching a vanished terminal).
pub const QUIT_GRACE: Duration = Duration::from_millis(2_500);

/// Asks for the user name on the terminal, before the screen is taken over.
fn prompt_name() -> Option<String> {
    let stdin = std::io::stdin();
    loop {
        print!("your name: ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match stdin.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {
                let name = line.trim();
                if !name.is_empty() {
                    return Some(name.to_owned());
                }
            }
        }
    }
}

/// Puts the terminal back: leaves the alternate screen and raw mode.
fn restore() {
    let _ = execute!(std::io::stdout(), DisableBracketedPaste);
    ratatui::restore();
}

/// Whether stdin and stdout are still a terminal: both stop being one when
/// the terminal is hung up.
fn terminal_present() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Reads terminal events on a thread (crossterm's reads block) until `stop`.
///
/// The thread is never joined: on a hung-up terminal crossterm's read does
/// not return (see the [module documentation](self)); the thread ends with
/// the process.
fn spawn_event_reader(stop: Arc<AtomicBool>) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(KEY_POLL) {
                Ok(true) => match event::read() {
                    Ok(ev) => {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// Resolves when the process is asked to terminate (SIGTERM, SIGHUP): the
/// terminal must be restored then too.
async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}

/// Runs a TUI session to its end.
pub async fn run(options: Options) -> ExitCode {
    let user = match options.user.clone().or_else(prompt_name) {
        Some(user) => user.trim().to_owned(),
        None => {
            eprintln!("chat-client: no user name");
            return ExitCode::from(2);
        }
    };
    let room = options
        .room
        .clone()
        .unwrap_or_else(|| DEFAULT_ROOM.to_owned());

    // Retry for ever: the screen says what is happening and /quit works.
    let mut config =
        SessionConfig::new(options.address.clone(), user.clone(), options.room.clone());
    config.transport = options.transport.clone();
    let (outgoing, updates) = session::start(config);

    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            eprintln!("chat-client: cannot set up the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `ratatui::try_init` installed a hook restoring the terminal on panic;
    // ours runs first and also turns bracketed paste off.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(std::io::stdout(), DisableBracketedPaste);
        previous(info);
    }));
    let _ = execute!(std::io::stdout(), EnableBracketedPaste);

    let stop = Arc::new(AtomicBool::new(false));
    let events = spawn_event_reader(Arc::clone(&stop));
    let mut app = App::new(&user, &session::room_name(&room), &options.address);
    let result = event_loop(&mut terminal, &mut app, &outgoing, updates, events).await;

    stop.store(true, Ordering::Relaxed);
    // On a terminal that is gone this fails quietly: nothing to restore.
    restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("chat-client: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Draws and reacts until the session ends. `Err` carries why it ended
/// without the user asking.
async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    outgoing: &mpsc::UnboundedSender<Outgoing>,
    mut updates: mpsc::UnboundedReceiver<Update>,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<(), String> {
    let terminate = terminate_signal();
    tokio::pin!(terminate);
    let send = |out: Vec<Outgoing>| {
        for o in out {
            let _ = outgoing.send(o);
        }
    };
    // Asks the session to leave, once; from then on the session has
    // `QUIT_GRACE` to end. Not joined, there is no room to leave: the
    // loop ends at once (a dial in progress would hold it for seconds).
    let quit = |app: &mut App, deadline: &mut Option<Instant>| {
        if !app.quitting {
            app.quitting = true;
            let _ = outgoing.send(Outgoing::Leave);
        }
        let grace = if *app.view.connection() == Connection::Connected {
            QUIT_GRACE
        } else {
            Duration::ZERO
        };
        deadline.get_or_insert_with(|| Instant::now() + grace);
    };
    let mut tty_check = tokio::time::interval(TTY_CHECK);
    tty_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut members_refresh = tokio::time::interval(MEMBERS_REFRESH);
    members_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether there is still a terminal to draw on.
    let mut have_terminal = true;
    // When quitting: the latest the loop waits for the session.
    let mut quit_by: Option<Instant> = None;
    // SIGTERM or SIGHUP came (the signal future is done then).
    let mut signalled = false;
    loop {
        if app.quitting && quit_by.is_none() {
            // Quit by a key: the same bound on the goodbye.
            quit(app, &mut quit_by);
        }
        if have_terminal && terminal.draw(|frame| render::draw(frame, app)).is_err() {
            // Writing to a hung-up terminal fails: it is gone.
            have_terminal = false;
            quit(app, &mut quit_by);
        }
        let now = Instant::now();
        let mut wake = app
            .deadline()
            .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        if let Some(by) = quit_by {
            if now >= by {
                return Ok(());
            }
            wake = wake.min(by - now);
        }
        tokio::select! {
            update = updates.recv() => {
                match update {
                    None | Some(Update::Left) => return Ok(()),
                    Some(Update::GaveUp(why)) => return Err(why),
                    Some(update) => {
                        if let Update::Connected { .. } | Update::Switched { .. } = update {
                            // Learn who is here, for the status bar, the
                            // member list and Tab.
                            app.view.expect_silent_who();
                            let _ = outgoing.send(Outgoing::Who);
                        }
                        app.update(&update, Instant::now());
                    }
                }
            }
            event = events.recv(), if have_terminal => match event {
                Some(Event::Key(key)) => send(app.key(key, Instant::now())),
                Some(Event::Paste(text)) => send(app.paste(&text, Instant::now())),
                Some(_) => {} // resize and the rest: the redraw handles it
                None => {
                    // The key reader met an error: the terminal went away.
                    have_terminal = false;
                    quit(app, &mut quit_by);
                }
            },
            _ = tty_check.tick(), if have_terminal => {
                if !terminal_present() {
                    have_terminal = false;
                    quit(app, &mut quit_by);
                }
            }
            () = tokio::time::sleep(wake) => send(app.tick(Instant::now())),
            _ = members_refresh.tick(),
                if app.show_members && *app.view.connection() == Connection::Connected =>
            {
                app.view.expect_silent_who();
                let _ = outgoing.send(Outgoing::Who);
            }
            () = &mut terminate, if !signalled => {
                // SIGTERM or SIGHUP (the terminal hung up): leave now. The
                // handlers stay installed: a second signal changes nothing.
                signalled = true;
                quit(app, &mut quit_by);
            }
        }
    }
}
