//! `smelt simulate`: plays a pipeline-parallel schedule out under given pass costs and
//! reports the step time and bubbles, optionally as a Chrome trace.

use super::write_output;
use smelt_compiler::pipeline_parallel::{generate, ScheduleKind};
use smelt_frontend::Diagnostic;
use smelt_sim::{simulate, Costs};
use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ScheduleArg {
    /// One forward, one backward.
    #[value(name = "1f1b")]
    OneFOneB,
    /// Zero bubble: backward split into input (B) and weight (W) passes.
    Zb1p,
    /// DualPipe: two chunks per rank, micro-batches fed from both ends, forward and
    /// backward overlapped (F&B).
    #[value(name = "dualpipe")]
    DualPipe,
    /// DualPipeV: DualPipe cut in half, `--pp` ranks running `2 × pp` stages.
    #[value(name = "dualpipev")]
    DualPipeV,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// The schedule.
    #[arg(long)]
    schedule: ScheduleArg,
    /// Pipeline ranks: one stage each, two chunks each for dualpipe and dualpipev.
    #[arg(long)]
    pp: usize,
    /// Micro-batches per training step.
    #[arg(long)]
    micro_batches: usize,
    /// Pass costs in any one unit: `F=…,B=…,W=…,FB=…` (B the whole backward, W its
    /// weight-gradient part, FB an overlapped forward and backward, F + B if not given).
    /// Costs taken from a compiled model are not implemented yet.
    #[arg(long)]
    costs: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also write the timeline as a Chrome trace (opens in Perfetto).
    #[arg(long)]
    trace: Option<PathBuf>,
}

fn parse_costs(text: &str) -> Result<Costs, Diagnostic> {
    let (mut forward, mut backward, mut weight, mut forward_backward) = (None, None, 0.0, None);
    for item in text.split(',') {
        let bad = || {
            Diagnostic::plain(format!(
                "--costs: '{item}' is not NAME=VALUE with NAME one of F, B, W, FB and VALUE a number"
            ))
        };
        let (name, value) = item.split_once('=').ok_or_else(bad)?;
        let value: f64 = value.trim().parse().map_err(|_| bad())?;
        match name.trim() {
            "F" => forward = Some(value),
            "B" => backward = Some(value),
            "W" => weight = value,
            "FB" => forward_backward = Some(value),
            _ => return Err(bad()),
        }
    }
    let (Some(forward), Some(backward)) = (forward, backward) else {
        return Err(Diagnostic::plain(
            "--costs must give F and B (W defaults to 0, FB to F + B)",
        ));
    };
    let mut costs = Costs::new(forward, backward, weight);
    if let Some(forward_backward) = forward_backward {
        costs.forward_backward = forward_backward;
    }
    costs
        .check()
        .map_err(|e| Diagnostic::plain(format!("--costs: {e}")))?;
    Ok(costs)
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    let costs = parse_costs(&args.costs)?;
    let kind = match args.schedule {
        ScheduleArg::OneFOneB => ScheduleKind::OneFOneB,
        ScheduleArg::Zb1p => ScheduleKind::ZeroBubble,
        ScheduleArg::DualPipe => ScheduleKind::DualPipe,
        ScheduleArg::DualPipeV => ScheduleKind::DualPipeV,
    };
    let plan = generate(kind, args.pp, args.micro_batches)
        .map_err(|e| Diagnostic::plain(e.to_string()))?;
    let timeline = simulate(&plan, &costs).map_err(|e| Diagnostic::plain(e.to_string()))?;
    let report = timeline.report();
    if let Some(path) = &args.trace {
        let trace = timeline.chrome_trace().to_string();
        std::fs::write(path, trace)
            .map_err(|e| Diagnostic::plain(format!("cannot write {}: {e}", path.display())))?;
    }
    let text = match args.format {
        Format::Json => {
            serde_json::json!({
                "step_time": report.step_time,
                "bubble": report.bubble,
                "bubble_per_rank": report.bubble_per_rank,
                "ranks": plan.to_text().lines().collect::<Vec<_>>(),
            })
            .to_string()
                + "\n"
        }
        Format::Text => format!(
            "{}step time {}, bubble {} (largest over ranks; per rank: {:?})\n",
            plan.to_text(),
            report.step_time,
            report.bubble,
            report.bubble_per_rank
        ),
    };
    write_output(None, &text)
}
