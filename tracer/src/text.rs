//! Plain-text layout shared by the terminal renderers (trace, sweep,
//! detect, advise). It sits apart from [`crate::report`] so that the
//! analysis and detection can lay out a table without depending on the
//! report, which itself depends on them.

/// Renders `rows` as left-aligned columns under `header`.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> =
            cells.zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}
