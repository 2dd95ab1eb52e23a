//! Tables for drift: a CSV file read column by column. A column is numeric while every
//! present value parses as a finite number, text from its first value that does not; empty
//! cells and the usual spellings of nothing (`NA`, `NaN`, `null`, `None`) are missing.

use std::path::Path;

/// One column's present values and how many were missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Values,
    pub missing: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Numeric(Vec<f64>),
    Text(Vec<String>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Numeric(v) => v.len(),
            Values::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value as text (a number as Rust writes it back: the shortest exact form).
    pub fn texts(&self) -> Vec<String> {
        match self {
            Values::Numeric(v) => v.iter().map(|x| number_text(*x)).collect(),
            Values::Text(v) => v.clone(),
        }
    }
}

/// How a number reads as a category: `1` for 1.0, else the shortest exact form.
pub fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x}") }
}

/// A table: its rows and columns, in the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub rows: usize,
    pub columns: Vec<Column>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Builds a table from columns of numbers (the served inputs of a model).
    pub fn numeric(columns: Vec<(String, Vec<f64>)>) -> Table {
        let rows = columns.first().map_or(0, |c| c.1.len());
        let columns = columns
            .into_iter()
            .map(|(name, v)| {
                let total = v.len();
                let present: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
                Column { name, missing: total - present.len(), values: Values::Numeric(present) }
            })
            .collect();
        Table { rows, columns }
    }
}

/// The most cells a table read for drift may hold: `drift:` steps run inside the engine, so
/// a table of any size must not take its memory (50 million: 1,000,000 rows of 50 columns).
pub const MAX_CELLS: usize = 50_000_000;

fn is_missing(cell: &str) -> bool {
    matches!(cell, "" | "NA" | "N/A" | "NaN" | "nan" | "null" | "NULL" | "None")
}

/// Reads a CSV file with a header row.
pub fn read_csv(path: &Path) -> Result<Table, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(std::io::BufReader::new(file));
    let header =
        reader.headers().map_err(|e| format!("{}: cannot read the header: {e}", path.display()))?.clone();
    if header.is_empty() {
        return Err(format!("{}: the file has no header row", path.display()));
    }
    let mut columns: Vec<Column> = header
        .iter()
        .map(|h| Column { name: h.trim().to_string(), values: Values::Numeric(Vec::new()), missing: 0 })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.as_str()) {
            return Err(format!("{}: the column `{}` appears twice in the header", path.display(), c.name));
        }
    }
    let mut record = csv::StringRecord::new();
    let mut rows = 0usize;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        rows += 1;
        if rows.saturating_mul(columns.len()) > MAX_CELLS {
            return Err(format!(
                "{}: more than {MAX_CELLS} cells; compare a sample of the table (drift is measured well on far fewer rows)",
                path.display()
            ));
        }
        if record.len() != columns.len() {
            return Err(format!(
                "{}: row {} has {} fields, the header {}",
                path.display(),
                rows + 1,
                record.len(),
                columns.len()
            ));
        }
        for (col, cell) in columns.iter_mut().zip(record.iter()) {
            let cell = cell.trim();
            if is_missing(cell) {
                col.missing += 1;
                continue;
            }
            match &mut col.values {
                Values::Numeric(v) => match cell.parse::<f64>() {
                    Ok(x) if x.is_finite() => v.push(x),
                    _ => {
                        let mut texts: Vec<String> = v.iter().map(|x| number_text(*x)).collect();
                        texts.push(cell.to_string());
                        col.values = Values::Text(texts);
                    }
                },
                Values::Text(v) => v.push(cell.to_string()),
            }
        }
    }
    Ok(Table { rows, columns })
}
