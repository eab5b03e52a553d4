//! The full-screen terminal front end: sets the terminal up (raw mode,
//! alternate screen, bracketed paste) and always puts it back — on exit, on
//! error, on SIGTERM/SIGHUP and on panic — and runs the event loop that ties
//! keys, session updates and timers to the [`App`].

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use crossterm::execute;
use tokio::sync::mpsc;

use super::app::App;
use super::session::{self, Outgoing, SessionConfig, Update};
use super::{Options, render};
use crate::chat::DEFAULT_ROOM;

/// How often the key reader checks whether it should stop.
const KEY_POLL: Duration = Duration::from_millis(100);
/// The longest the loop sleeps without a reason to wake (typing expiry).
const TICK: Duration = Duration::from_secs(1);

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

/// Reads terminal events on a thread (crossterm's reads block) until `stop`.
fn spawn_event_reader(
    stop: Arc<AtomicBool>,
) -> (mpsc::UnboundedReceiver<Event>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = std::thread::spawn(move || {
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
    (rx, handle)
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
    let (events, reader) = spawn_event_reader(Arc::clone(&stop));
    let mut app = App::new(&user, &room, &options.address);
    let result = event_loop(&mut terminal, &mut app, &outgoing, updates, events).await;

    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
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
    loop {
        terminal
            .draw(|frame| render::draw(frame, app))
            .map_err(|e| format!("cannot draw: {e}"))?;
        let wake = app.deadline().map_or(TICK, |at| {
            at.saturating_duration_since(Instant::now()).min(TICK)
        });
        tokio::select! {
            update = updates.recv() => {
                match update {
                    None | Some(Update::Left) => return Ok(()),
                    Some(Update::GaveUp(why)) => return Err(why),
                    Some(update) => {
                        if let Update::Connected { .. } = update {
                            // Learn who is here, for the status bar and Tab.
                            app.view.expect_silent_who();
                            let _ = outgoing.send(Outgoing::Who);
                        }
                        app.update(&update, Instant::now());
                    }
                }
            }
            event = events.recv() => match event {
                Some(Event::Key(key)) => send(app.key(key, Instant::now())),
                Some(Event::Paste(text)) => send(app.paste(&text, Instant::now())),
                Some(_) => {} // resize and the rest: the redraw handles it
                None => {
                    // The terminal went away: leave.
                    if !app.quitting {
                        app.quitting = true;
                        let _ = outgoing.send(Outgoing::Leave);
                    }
                }
            },
            () = tokio::time::sleep(wake) => send(app.tick(Instant::now())),
            () = &mut terminate, if !app.quitting => {
                app.quitting = true;
                let _ = outgoing.send(Outgoing::Leave);
            }
        }
    }
}
