//! Benchmark suites. Each runs uring and its peers on the same work in one process run and
//! prints a table of measured figures with ratios.

pub mod core;
pub mod echo;
pub mod fs;

/// Prints a table: a title, a header row and rows, columns padded to fit.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let cols = header.len();
    // Widths in characters, not bytes: `format!`'s padding counts characters, and "µs" is
    // three bytes.
    let chars = |s: &str| s.chars().count();
    let mut width: Vec<usize> = header.iter().map(|h| chars(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(chars(c));
        }
    }
    println!("\n## {title}\n");
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = width[i]))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(width.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

/// The median of `xs` (sorted in place).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
