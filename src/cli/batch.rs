//! `provd vm deploy --count N --name-pattern P` on the terminal: `vm::batch_deploy` plans
//! and deploys; this shows one progress bar for the batch and a line per VM as it ends,
//! then a table (or `--json`) with every name's outcome, and the exit status says whether
//! all landed.

use crate::vm::batch_deploy::{self, Batch, Outcome};
use std::process::ExitCode;

pub(super) fn run(b: &Batch, names: &[String], parallel: u32, json: bool) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(0);
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} deployed, {elapsed} {msg}")
            .expect("a valid template"),
    );
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut on_plan = |p: &batch_deploy::Planned| {
        for o in p.passed_over {
            // A name may exist there unseen: say so, a rerun after it is back finds it.
            eprintln!(
                "warning: passing over {}: {} (a VM of this batch defined there is not seen)",
                o.uri, o.reason
            );
        }
        eprintln!(
            "{} VM(s): {} to deploy ({:?}, {} MiB each), {} already there, {} with no room",
            names.len(),
            p.to_deploy,
            b.placement,
            p.need_mib,
            p.exist,
            p.no_room,
        );
        bar.set_length(p.to_deploy as u64);
    };
    let on_done = |o: &Outcome| {
        let shown = o
            .hypervisor
            .as_deref()
            .map(crate::vm::deploy::uri_for_source)
            .unwrap_or("-");
        match (&o.deployed, &o.error) {
            (Some(d), _) => say(format!(
                "{}: deployed on {shown} ({})",
                o.name,
                if d.started { "started" } else { "defined" }
            )),
            (None, e) => say(format!(
                "{}: FAILED on {shown}: {}",
                o.name,
                e.as_deref().unwrap_or("?")
            )),
        }
        bar.inc(1);
    };
    let report = batch_deploy::run(b, names, parallel as usize, &mut on_plan, &on_done);
    bar.finish_and_clear();
    print(&report, json)?;
    Ok(if report.all_there() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(report: &batch_deploy::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("{:<24} {:<9} {:<36} DETAIL", "NAME", "RESULT", "HYPERVISOR");
    for o in &report.vms {
        let result = serde_json::to_value(o.result)?;
        let host = o
            .hypervisor
            .as_deref()
            .map(crate::vm::deploy::uri_for_source)
            .unwrap_or("-");
        let detail = match (&o.deployed, &o.error) {
            (Some(d), _) => format!("{}, seed {}", d.vm.state, d.seed.url),
            (None, Some(e)) => e.clone(),
            (None, None) => String::new(),
        };
        println!(
            "{:<24} {:<9} {:<36} {detail}",
            o.name,
            result.as_str().unwrap_or("?"),
            host
        );
    }
    Ok(())
}
