//! SVG charts (plotters): grouped bars, one group per subject, one bar per series, with a
//! whisker from the minimum to the maximum of the repetitions.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::stats::Spread;

pub struct Series {
    pub name: String,
    /// One per category (subject); `None` where the subject has no such figure.
    pub values: Vec<Option<Spread>>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[Series],
) -> Result<()> {
    let (bottom, top) = y_range(series);
    let n = categories.len().max(1);
    let width = (160 * n as u32).max(700);
    let root = SVGBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), bottom..top)
        .map_err(err)?;
    let cats = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cats.len() {
                cats[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let slot = 0.8 / k;
    for (si, s) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let rects = s.values.iter().enumerate().filter_map(|(ci, v)| {
            let v = (*v)?;
            let x0 = ci as f64 - 0.4 + slot * si as f64;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + slot * 0.9, v.median)],
                color.filled(),
            ))
        });
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        let whiskers = s.values.iter().enumerate().filter_map(|(ci, v)| {
            let v = (*v)?;
            (v.n > 1).then(|| {
                let xc = ci as f64 - 0.4 + slot * si as f64 + slot * 0.45;
                PathElement::new(vec![(xc, v.min), (xc, v.max)], BLACK.stroke_width(2))
            })
        });
        chart.draw_series(whiskers).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The y axis: from 0, or from below the lowest value when one is negative (a negative
/// "added" latency is a finding, not something to clip away), to above the highest.
pub fn y_range(series: &[Series]) -> (f64, f64) {
    let values = || series.iter().flat_map(|s| s.values.iter().flatten());
    let max = values().map(|v| v.max.max(v.median)).fold(0.0f64, f64::max);
    let min = values().map(|v| v.min.min(v.median)).fold(0.0f64, f64::min);
    let margin = 0.15 * (max - min);
    let top = if max > 0.0 {
        max + margin
    } else if min < 0.0 {
        margin
    } else {
        1.0
    };
    let bottom = if min < 0.0 { min - margin } else { 0.0 };
    (bottom, top)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[(f64, f64, f64)]) -> Vec<Series> {
        vec![Series {
            name: "p99".into(),
            values: values
                .iter()
                .map(|&(min, median, max)| {
                    Some(Spread {
                        median,
                        min,
                        max,
                        n: 3,
                    })
                })
                .collect(),
        }]
    }

    #[test]
    fn negative_values_are_inside_the_y_range() {
        let (bottom, top) = y_range(&series(&[(-610.0, -539.0, 900.0), (10.0, 48.0, 60.0)]));
        assert!(bottom < -610.0 && top > 900.0, "{bottom}..{top}");
        let (bottom, top) = y_range(&series(&[(-20.0, -10.0, -5.0)]));
        assert!(bottom < -20.0 && top > 0.0, "{bottom}..{top}");
        let (bottom, top) = y_range(&series(&[(5.0, 10.0, 20.0)]));
        assert!(bottom == 0.0 && top > 20.0, "{bottom}..{top}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("neg.svg");
        let cats = ["gembok".to_owned(), "haproxy".to_owned()];
        bars(
            &path,
            "t",
            "µs",
            &cats,
            &series(&[(-610.0, -539.0, 900.0), (10.0, 48.0, 60.0)]),
        )
        .unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("-600"));
    }
}
