//! Aligned text tables for the operator commands (`tessera agents`, `tasks`, `top`...): columns
//! as wide as their widest cell, two spaces apart, numbers right-aligned.

use std::fmt::Write;

/// A table being filled row by row.
pub struct Table {
    headers: Vec<&'static str>,
    /// Columns whose cells are right-aligned (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is right-aligned (the
    /// `>` is not printed).
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header line, no trailing spaces.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(n).enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w - width(cell);
                if self.right[i] {
                    let _ = write!(line, "{}{cell}", " ".repeat(pad));
                } else {
                    let _ = write!(line, "{cell}{}", " ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut t = Table::new(&["NAME", ">CPUS", "STATE"]);
        t.row(vec!["a".into(), "1.5".into(), "running".into()]);
        t.row(vec!["longer-name".into(), "12".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME         CPUS  STATE\n\
             a             1.5  running\n\
             longer-name    12\n"
        );
    }
}
