//! The chat client's cost per key: one character typed into an input line
//! already `N` characters long, then the whole TUI screen drawn (the event
//! loop redraws after every key), for N = 20, 200 and 2000 (the server's
//! longest message). Drawn with `ratatui`'s in-memory `TestBackend`, 80×20,
//! with a pane full of lines: the terminal's own I/O is not measured.
//!
//! Typing must cost the same per key whatever the line's length: before
//! the fix, the input window was re-measured from every candidate start,
//! and a 2000-character line took 7.2 s to type key by key.
//!
//! ```text
//! cargo bench --bench chat_client_input -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Figures: `docs/chat-client.md`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use grpc_chat::chat_client::app::App;
use grpc_chat::chat_client::display::DisplayLine;
use grpc_chat::chat_client::render;

/// An app with a full pane and `len` characters in the input line, and a
/// terminal it has been drawn on once.
fn typed(len: usize) -> (App, Terminal<TestBackend>) {
    let mut app = App::new("alice", "lobby", "127.0.0.1:50053");
    for i in 0..40 {
        app.push(DisplayLine::message(
            1_700_000_000 + i,
            "bob",
            &format!("message {i}: the quick brown fox jumps over the lazy dog"),
            "alice",
        ));
    }
    let text: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(len)
        .collect();
    app.paste(&text, Instant::now());
    let mut terminal = Terminal::new(TestBackend::new(80, 20)).expect("an in-memory terminal");
    terminal
        .draw(|frame| render::draw(frame, &mut app))
        .expect("drawing in memory");
    (app, terminal)
}

fn key_and_draw(c: &mut Criterion) {
    let mut group = c.benchmark_group("chat_client_key_and_draw");
    let key = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE);
    for len in [20, 200, 2000] {
        group.bench_function(format!("line_{len}"), |b| {
            b.iter_batched(
                || typed(len),
                |(mut app, mut terminal)| {
                    black_box(app.key(key, Instant::now()));
                    terminal
                        .draw(|frame| render::draw(frame, &mut app))
                        .expect("drawing in memory");
                    (app, terminal)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, key_and_draw);
criterion_main!(benches);
