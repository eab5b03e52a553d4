//! The input line being edited: text, cursor, and the editing operations a
//! terminal user expects (Ctrl-W, Ctrl-U, Home/End, word-at-cursor for name
//! completion). Pure; the cursor is a byte index on a `char` boundary.

use unicode_width::UnicodeWidthChar;

/// An editable line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    text: String,
    /// Byte index into `text`, always on a char boundary.
    cursor: usize,
}

impl Input {
    /// An empty line.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the line is empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Takes the text, leaving the line empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Inserts `c` at the cursor. Control characters are not inserted.
    pub fn insert(&mut self, c: char) {
        if c.is_control() {
            return;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts pasted text; line breaks and tabs become spaces, other
    /// controls are dropped.
    pub fn insert_str(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '\n' | '\t' => self.insert(' '),
                '\r' => {}
                c => self.insert(c),
            }
        }
    }

    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .next_back()
            .map(|(i, _)| i)
    }

    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }

    /// Deletes the character before the cursor. Returns whether anything
    /// changed.
    pub fn backspace(&mut self) -> bool {
        match self.prev_boundary() {
            Some(at) => {
                self.text.replace_range(at..self.cursor, "");
                self.cursor = at;
                true
            }
            None => false,
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) -> bool {
        match self.next_boundary() {
            Some(end) => {
                self.text.replace_range(self.cursor..end, "");
                true
            }
            None => false,
        }
    }

    /// Moves the cursor one character left.
    pub fn left(&mut self) {
        if let Some(at) = self.prev_boundary() {
            self.cursor = at;
        }
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        if let Some(at) = self.next_boundary() {
            self.cursor = at;
        }
    }

    /// Moves the cursor to the start.
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// Moves the cursor to the end.
    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// The start of the word before the cursor.
    fn word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8())
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) -> bool {
        let start = self.word_start();
        let changed = start != self.cursor;
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
        changed
    }

    /// Deletes from the start to the cursor (Ctrl-U).
    pub fn delete_to_start(&mut self) -> bool {
        let changed = self.cursor > 0;
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
        changed
    }

    /// Deletes from the cursor to the end (Ctrl-K).
    pub fn delete_to_end(&mut self) -> bool {
        let changed = self.cursor < self.text.len();
        self.text.truncate(self.cursor);
        changed
    }

    /// Completes the word before the cursor with the first of `names` it is
    /// a (case-insensitive) prefix of. At the start of the line the name is
    /// followed by ": ", elsewhere by a space. Returns whether it completed.
    pub fn complete<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> bool {
        let start = self.word_start();
        let word = self.text[start..self.cursor].to_lowercase();
        if word.is_empty() || self.text[start..self.cursor].contains(char::is_whitespace) {
            return false;
        }
        let Some(name) = names
            .into_iter()
            .find(|n| n.to_lowercase().starts_with(&word))
        else {
            return false;
        };
        let suffix = if start == 0 { ": " } else { " " };
        let completed = format!("{name}{suffix}");
        self.text.replace_range(start..self.cursor, &completed);
        self.cursor = start + completed.len();
        true
    }

    /// What to show in `width` columns so the cursor stays visible: the
    /// visible text and the cursor's column within it.
    ///
    /// Runs on every redraw, so after every key: it walks only the
    /// characters that can be shown — back from the cursor until the
    /// columns are used up, then forward — never the whole line, and never
    /// measures the same text twice (an earlier version re-measured the text
    /// from each candidate start, which made typing quadratic in the line's
    /// length).
    pub fn window(&self, width: usize) -> (&str, usize) {
        let width = width.max(1);
        // Back from the cursor: keep characters while they fit, leaving one
        // column for the cursor itself at the end.
        let mut start = self.cursor;
        let mut column = 0;
        for (i, c) in self.text[..self.cursor].char_indices().rev() {
            let w = c.width().unwrap_or(0);
            if column + w + 1 > width {
                break;
            }
            column += w;
            start = i;
        }
        // Forward from the cursor: as much as still fits.
        let mut end = self.cursor;
        let mut used = column;
        for (i, c) in self.text[self.cursor..].char_indices() {
            let w = c.width().unwrap_or(0);
            if used + w > width {
                break;
            }
            used += w;
            end = self.cursor + i + c.len_utf8();
        }
        (&self.text[start..end], column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Input {
        let mut i = Input::new();
        i.insert_str(s);
        i
    }

    #[test]
    fn editing() {
        let mut i = typed("héllo wörld");
        assert!(i.backspace());
        assert_eq!(i.text(), "héllo wörl");
        i.home();
        i.right();
        i.right();
        assert!(i.delete());
        assert_eq!(i.text(), "hélo wörl");
        i.end();
        assert!(i.delete_word());
        assert_eq!(i.text(), "hélo ");
        assert!(i.delete_word());
        assert_eq!(i.text(), "");
        assert!(!i.backspace());
        assert!(!i.delete());
    }

    #[test]
    fn kill_to_start_and_end() {
        let mut i = typed("abc def");
        i.left();
        i.left();
        assert!(i.delete_to_end());
        assert_eq!(i.text(), "abc d");
        i.left();
        assert!(i.delete_to_start());
        assert_eq!(i.text(), "d");
        assert_eq!(i.take(), "d");
        assert!(i.is_empty());
    }

    #[test]
    fn controls_are_not_typed() {
        let mut i = Input::new();
        i.insert('\x1b');
        i.insert('\u{7f}');
        assert!(i.is_empty());
        i.insert_str("a\nb\tc\r\x07");
        assert_eq!(i.text(), "a b c");
    }

    #[test]
    fn completion() {
        let names = ["Alice", "bob", "bobby"];
        let mut i = typed("al");
        assert!(i.complete(names));
        assert_eq!(i.text(), "Alice: ");
        let mut i = typed("hi BO");
        assert!(i.complete(names));
        assert_eq!(i.text(), "hi bob ");
        let mut i = typed("hi zed");
        assert!(!i.complete(names));
        let mut i = typed("hi ");
        assert!(!i.complete(names), "nothing to complete");
    }

    #[test]
    fn window_keeps_the_cursor_visible() {
        let i = typed("0123456789");
        assert_eq!(i.window(20), ("0123456789", 10));
        assert_eq!(i.window(5), ("6789", 4));
        let mut i = typed("0123456789");
        i.home();
        assert_eq!(i.window(5), ("01234", 0));
        // Wide characters count two columns.
        let i = typed("漢字漢字");
        assert_eq!(i.window(5), ("漢字", 4));
        let mut i = typed("漢字漢字");
        i.home();
        assert_eq!(i.window(5), ("漢字", 0));
        // The cursor mid-line: what is before it, then what still fits.
        let mut i = typed("0123456789");
        for _ in 0..3 {
            i.left();
        }
        assert_eq!(i.window(5), ("34567", 4));
        assert_eq!(
            i.window(1),
            ("7", 0),
            "only the cursor and what is under it"
        );
    }
}
