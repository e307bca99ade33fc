//! Output as kubectl prints it: tables with columns as wide as their widest cell, three spaces
//! apart.

/// Print `rows` (the first is the header) as a table.
pub fn print_table(rows: &[Vec<String>]) {
    print!("{}", table(rows));
}

pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["NAME".to_string(), "TYPE".to_string()],
            vec![
                "default".to_string(),
                "ExclusiveClusterSetLabel".to_string(),
            ],
            vec!["x".to_string(), String::new()],
        ];
        assert_eq!(
            super::table(&rows),
            "NAME      TYPE\ndefault   ExclusiveClusterSetLabel\nx\n"
        );
    }
}
