//! Drawing the TUI with `ratatui`: the status bar, the message pane, the
//! typing line and the input line.
//!
//! ```text
//! ┌───────────────────────────────────────────────────────────┐
//! │ #lobby · alice · 127.0.0.1:50053 · connected · 3 here     │ status bar
//! │12:01 -- welcome to lobby, alice: also here: bob, carol -- │
//! │12:02 [bob] hi!                                            │ message pane
//! │12:02 [you] hello                                          │ (scrolls)
//! │12:03 * carol joined                                       │
//! │--:-- [you] are you there? (pending)                       │ (not sent yet)
//! │* bob typing...                                            │ typing line
//! │> what's up_                                               │ input line
//! └───────────────────────────────────────────────────────────┘
//! ```
//!
//! The member list (F2, Ctrl-N or `/names`) takes the right-hand
//! [`MEMBERS_WIDTH`] columns of the message pane, when the pane keeps at
//! least [`MIN_PANE_WIDTH`] of its own:
//!
//! ```text
//! │12:02 [bob] hi!                          │ 3 here            │
//! │12:02 [you] hello                        │ alice             │
//! │                                         │ bob               │
//! │                                         │ +1 listening      │
//! ```
//!
//! It shows the members the client knows of (its last `/who` answer, then
//! joins and leaves), us among them in bold, and draws only as many names
//! as it has rows.
//!
//! While the connection is down, the status bar says so and follows each
//! attempt (`#lobby · alice · reconnecting… · retry in 4s · cannot connect
//! to …`), and messages typed meanwhile show at the bottom of the pane,
//! marked pending, until the server's echo replaces them.
//!
//! Long lines wrap, with continuation rows indented under the text; the
//! wrapping is done here ([`wrap`]) rather than by `ratatui` so that the
//! pane can count rows and scroll by them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use unicode_width::UnicodeWidthChar;

use super::app::App;
use super::display::{DisplayLine, Entry, Speaker, color_index};
use super::sanitize::sanitize;
use super::session::short_duration;
use super::view::Connection;

/// Name colours; a name's slot is [`color_index`] of it.
pub const PALETTE: &[Color] = &[
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
];

/// The colour of `name`.
pub fn name_color(name: &str) -> Color {
    PALETTE[color_index(name, PALETTE.len())]
}

/// The member list's width, its border included.
pub const MEMBERS_WIDTH: u16 = 20;
/// The member list is drawn only when the message pane keeps this many
/// columns beside it.
pub const MIN_PANE_WIDTH: u16 = 40;

const TIME_WIDTH: usize = 6; // "HH:MM "
const PROMPT: &str = "> ";

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

/// The styled spans of one line, time first.
pub fn spans(line: &DisplayLine, me: &str) -> Vec<Span<'static>> {
    let mut spans = vec![Span::styled(format!("{} ", line.clock()), dim())];
    let text_style = if line.mentions_you {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    match &line.entry {
        Entry::Message {
            from: Speaker::You,
            text,
        } => {
            spans.push(Span::styled(
                "[you] ",
                Style::default()
                    .fg(name_color(me))
                    .add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::styled(text.clone(), text_style));
        }
        Entry::Message {
            from: Speaker::Other(name),
            text,
        } => {
            spans.push(Span::styled(
                format!("[{name}] "),
                Style::default()
                    .fg(name_color(name))
                    .add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::styled(text.clone(), text_style));
        }
        Entry::Action { name, text, .. } => {
            let italic = Style::default().add_modifier(Modifier::ITALIC);
            spans.push(Span::styled("* ", italic));
            spans.push(Span::styled(
                name.clone(),
                italic.fg(name_color(name)).add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::styled(format!(" {text}"), italic.patch(text_style)));
        }
        Entry::Joined(_) | Entry::Left(_) | Entry::Info(_) => {
            spans.push(Span::styled(line.plain(), dim()));
        }
        Entry::Notice(_) => {
            spans.push(Span::styled(
                line.plain(),
                dim().add_modifier(Modifier::ITALIC),
            ));
        }
        Entry::Room(_) => {
            spans.push(Span::styled(
                line.plain(),
                Style::default()
                    .fg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
            ));
        }
    }
    spans
}

/// Wraps styled spans into rows of at most `width` columns, breaking after a
/// space where one is near, otherwise anywhere; continuation rows start with
/// `indent` spaces.
pub fn wrap(spans: &[Span<'static>], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = if indent * 2 > width { 0 } else { indent };
    let cells: Vec<(char, Style)> = spans
        .iter()
        .flat_map(|s| s.content.chars().map(move |c| (c, s.style)))
        .collect();
    let mut rows: Vec<Vec<(char, Style)>> = Vec::new();
    let mut start = 0;
    while start < cells.len() || rows.is_empty() {
        let lead = if rows.is_empty() { 0 } else { indent };
        let mut used = lead;
        let mut end = start;
        let mut last_space = None;
        while end < cells.len() {
            let w = cells[end].0.width().unwrap_or(0);
            if used + w > width {
                break;
            }
            if cells[end].0 == ' ' {
                last_space = Some(end);
            }
            used += w;
            end += 1;
        }
        if end < cells.len() {
            // Break after the last space, unless it would leave a short row.
            if let Some(space) =
                last_space.filter(|s| *s > start && (s - start) * 3 >= (end - start))
            {
                end = space + 1;
            }
            if end == start {
                // A character wider than the row: take it anyway.
                end = start + 1;
            }
        }
        let mut row = vec![(' ', Style::default()); lead];
        row.extend_from_slice(&cells[start..end]);
        rows.push(row);
        start = end;
        if cells.is_empty() {
            break;
        }
    }
    rows.into_iter()
        .map(|row| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            let mut current = String::new();
            let mut style = None;
            for (c, s) in row {
                if style != Some(s) && !current.is_empty() {
                    spans.push(Span::styled(
                        std::mem::take(&mut current),
                        style.unwrap_or_default(),
                    ));
                }
                style = Some(s);
                current.push(c);
            }
            if !current.is_empty() {
                spans.push(Span::styled(current, style.unwrap_or_default()));
            }
            Line::from(spans)
        })
        .collect()
}

/// A message typed while not connected, waiting to be sent:
/// `--:-- [you] text (pending)`, dim.
pub fn pending_spans(text: &str, me: &str) -> Vec<Span<'static>> {
    vec![
        Span::styled("--:-- ", dim()),
        Span::styled(
            "[you] ",
            Style::default()
                .fg(name_color(me))
                .add_modifier(Modifier::BOLD),
        ),
        Span::styled(sanitize(text).into_owned(), dim()),
        Span::styled(" (pending)", dim().add_modifier(Modifier::ITALIC)),
    ]
}

/// The rows to show in a pane `height` rows tall, scrolled `scroll` rows up
/// from the bottom: the conversation, then the pending messages. Only the
/// lines needed are wrapped. Clamps `scroll` to the top.
pub fn visible_rows(app: &mut App, width: usize, height: usize) -> Vec<Line<'static>> {
    let me = app.view.me().to_owned();
    let want = height.saturating_add(app.scroll);
    let mut rows: Vec<Line<'static>> = Vec::new();
    for text in app.pending.iter().rev() {
        let mut wrapped = wrap(&pending_spans(text, &me), width, TIME_WIDTH);
        wrapped.reverse();
        rows.extend(wrapped);
    }
    for line in app.lines.iter().rev() {
        let mut wrapped = wrap(&spans(line, &me), width, TIME_WIDTH);
        wrapped.reverse();
        rows.extend(wrapped);
        if rows.len() >= want {
            break;
        }
    }
    // `rows` is newest first. Clamp the scroll so the top line stays at the
    // top of the pane.
    let max_scroll = rows.len().saturating_sub(height);
    if app.scroll > max_scroll {
        app.scroll = max_scroll;
        if app.scroll == 0 {
            app.unread = 0;
        }
    }
    let mut shown: Vec<Line<'static>> = rows.into_iter().skip(app.scroll).take(height).collect();
    shown.reverse();
    shown
}

/// The member list's rows, at most `height`: how many are here, then the
/// names (ours bold), then how many more did not fit and how many have no
/// name yet. Walks only the names it shows.
pub fn member_rows(app: &App, height: usize) -> Vec<Line<'static>> {
    let view = &app.view;
    let named = view.member_count() + 1;
    let listeners = usize::try_from(view.listeners()).unwrap_or(usize::MAX);
    let border = || Span::styled("│ ", dim());
    let mut rows = vec![Line::from(vec![
        border(),
        Span::styled(
            format!("{} here", named.saturating_add(listeners)),
            Style::default().add_modifier(Modifier::BOLD),
        ),
    ])];
    let tail = usize::from(listeners > 0);
    let room = height.saturating_sub(1 + tail);
    let shown = if named <= room {
        named
    } else {
        room.saturating_sub(1)
    };
    for (name, us) in view.everyone().take(shown) {
        let mut style = Style::default().fg(name_color(name));
        if us {
            style = style.add_modifier(Modifier::BOLD);
        }
        rows.push(Line::from(vec![
            border(),
            Span::styled(name.to_owned(), style),
        ]));
    }
    if shown < named {
        rows.push(Line::from(vec![
            border(),
            Span::styled(format!("+{} more", named - shown), dim()),
        ]));
    }
    if listeners > 0 {
        rows.push(Line::from(vec![
            border(),
            Span::styled(
                format!("+{listeners} listening"),
                dim().add_modifier(Modifier::ITALIC),
            ),
        ]));
    }
    rows.truncate(height);
    while rows.len() < height {
        rows.push(Line::from(border()));
    }
    rows
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let [status, pane, typing, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    // Status bar.
    let (state, state_color) = match app.view.connection() {
        Connection::Connecting => ("connecting…", Color::Yellow),
        Connection::Connected => ("connected", Color::Green),
        Connection::Reconnecting => ("reconnecting…", Color::Yellow),
        Connection::Closed => ("closed", Color::Red),
    };
    let here = app.view.member_count() + 1;
    let bar = Style::default().bg(Color::DarkGray).fg(Color::White);
    let mut status_spans = vec![Span::styled(
        format!(" #{} ", sanitize(app.view.room())),
        bar.add_modifier(Modifier::BOLD),
    )];
    match app.view.disconnect() {
        // Not connected: the one place that follows each attempt, its
        // reason last (it names the address, and may be cut).
        Some((why, retry_in)) if *app.view.connection() != Connection::Connected => {
            status_spans.push(Span::styled(format!("· {} · ", app.view.me()), bar));
            status_spans.push(Span::styled(state, bar.fg(state_color)));
            if !app.pending.is_empty() {
                status_spans.push(Span::styled(
                    format!(" · {} pending", app.pending.len()),
                    bar.fg(Color::LightYellow),
                ));
            }
            status_spans.push(Span::styled(
                format!(" · retry in {} · {why}", short_duration(retry_in)),
                bar,
            ));
        }
        _ => {
            status_spans.push(Span::styled(
                format!("· {} · {} · ", app.view.me(), app.address),
                bar,
            ));
            status_spans.push(Span::styled(state, bar.fg(state_color)));
        }
    }
    if *app.view.connection() == Connection::Connected {
        status_spans.push(Span::styled(format!(" · {here} here"), bar));
    }
    if !app.pending.is_empty() && app.view.disconnect().is_none() {
        status_spans.push(Span::styled(
            format!(" · {} pending", app.pending.len()),
            bar.fg(Color::LightYellow),
        ));
    }
    if app.scroll > 0 {
        let more = if app.unread > 0 {
            format!(" · ↓ {} new (Esc) ", app.unread)
        } else {
            " · scrolled (Esc) ".to_owned()
        };
        status_spans.push(Span::styled(more, bar.fg(Color::LightYellow)));
    }
    status_spans.push(Span::styled(" ".repeat(usize::from(status.width)), bar));
    frame.render_widget(Paragraph::new(Line::from(status_spans)), status);

    // Message pane, and the member list beside it when it is shown and
    // there is room.
    let pane = if app.show_members && pane.width >= MIN_PANE_WIDTH + MEMBERS_WIDTH {
        let [messages, members] = Layout::horizontal([
            Constraint::Min(MIN_PANE_WIDTH),
            Constraint::Length(MEMBERS_WIDTH),
        ])
        .areas(pane);
        let rows = member_rows(app, usize::from(members.height));
        frame.render_widget(Paragraph::new(rows), members);
        messages
    } else {
        pane
    };
    app.page = usize::from(pane.height);
    let rows = visible_rows(app, usize::from(pane.width), usize::from(pane.height));
    frame.render_widget(Paragraph::new(rows), pane);

    // Typing line.
    if let Some(line) = &app.typing_line {
        frame.render_widget(
            Paragraph::new(Span::styled(
                line.clone(),
                dim().add_modifier(Modifier::ITALIC),
            )),
            typing,
        );
    }

    // Input line, scrolled so the cursor stays visible.
    let room = usize::from(input.width).saturating_sub(PROMPT.len());
    let (text, column) = app.input.window(room);
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(PROMPT, Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(text.to_owned()),
        ])),
        input,
    );
    let x = input
        .x
        .saturating_add(u16::try_from(PROMPT.len() + column).unwrap_or(u16::MAX))
        .min(input.right().saturating_sub(1));
    frame.set_cursor_position(Position::new(x, input.y));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &Line<'_>) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn wrap_breaks_at_spaces_and_indents() {
        let spans = vec![
            Span::raw("12:00 "),
            Span::raw("[bob] the quick brown fox jumps"),
        ];
        let rows: Vec<String> = wrap(&spans, 20, 6).iter().map(text).collect();
        assert_eq!(
            rows,
            ["12:00 [bob] the ", "      quick brown ", "      fox jumps"]
        );
        for row in &rows {
            assert!(unicode_width::UnicodeWidthStr::width(row.as_str()) <= 20);
        }
    }

    #[test]
    fn wrap_splits_long_words_and_wide_chars() {
        let rows: Vec<String> = wrap(&[Span::raw("abcdefghij")], 4, 0)
            .iter()
            .map(text)
            .collect();
        assert_eq!(rows, ["abcd", "efgh", "ij"]);
        let rows: Vec<String> = wrap(&[Span::raw("漢字漢字")], 5, 0)
            .iter()
            .map(text)
            .collect();
        assert_eq!(rows, ["漢字", "漢字"]);
        assert_eq!(wrap(&[], 10, 2).len(), 1, "an empty line is one row");
    }

    #[test]
    fn wrap_keeps_styles() {
        let red = Style::default().fg(Color::Red);
        let rows = wrap(&[Span::styled("ab", red), Span::raw("cd")], 3, 0);
        assert_eq!(rows[0].spans[0].style, red);
        assert_eq!(rows[0].spans[1].content, "c");
        assert_eq!(rows[1].spans[0].content, "d");
    }

    #[test]
    fn scroll_is_clamped_to_the_top() {
        let mut app = App::new("alice", "lobby", "x");
        for i in 0..5 {
            app.push(DisplayLine::notice(0, &format!("n{i}")));
        }
        app.scroll = 100;
        let rows = visible_rows(&mut app, 40, 3);
        assert_eq!(app.scroll, 2);
        assert!(text(&rows[0]).contains("n0"));
        app.scroll = 0;
        let rows = visible_rows(&mut app, 40, 3);
        assert!(text(&rows[2]).contains("n4"));
    }

    #[test]
    fn the_member_list_fits_its_rows() {
        use crate::chat_client::session::Update;
        use crate::pb::chat::WhoResponse;
        let mut app = App::new("carol", "lobby", "x");
        let who = |users: &[&str], listeners| {
            Update::Who(Ok(WhoResponse {
                room: "lobby".into(),
                users: users.iter().map(|u| (*u).to_owned()).collect(),
                listeners,
                ..Default::default()
            }))
        };
        let rows = |app: &App, height| -> Vec<String> {
            member_rows(app, height).iter().map(text).collect()
        };
        app.view.expect_silent_who();
        app.update(
            &who(&["alice", "bob", "carol"], 1),
            std::time::Instant::now(),
        );
        assert_eq!(
            rows(&app, 6),
            [
                "│ 4 here",
                "│ alice",
                "│ bob",
                "│ carol",
                "│ +1 listening",
                "│ "
            ]
        );
        assert_eq!(
            rows(&app, 4),
            ["│ 4 here", "│ alice", "│ +2 more", "│ +1 listening"]
        );
        let everyone: Vec<String> = (0..1000).map(|i| format!("u{i:04}")).collect();
        let names: Vec<&str> = everyone.iter().map(String::as_str).collect();
        app.view.expect_silent_who();
        app.update(&who(&names, 0), std::time::Instant::now());
        let shown = rows(&app, 3);
        assert_eq!(shown, ["│ 1001 here", "│ carol", "│ +1000 more"]);
    }

    #[test]
    fn names_have_stable_colours() {
        assert_eq!(name_color("alice"), name_color("alice"));
        assert_eq!(name_color("ALICE"), name_color("alice"));
    }
}
