//! `bunker repair index`, `snapshots`, `packs` and `config`.

use std::io::Write;

use anyhow::Result;
use bunker_agent::platform;
use bunker_repo_format::check::Problem;
use bunker_repo_format::config_repair::rebuild_config;
use bunker_repo_format::repair::{
    RepairSnapshotsOptions, apply_index_repair, apply_snapshot_repair, plan_index_repair,
    plan_snapshot_repair,
};
use bunker_repo_format::salvage::{
    SalvageOptions, SalvageReport, apply_pack_salvage, parse_pack_name, plan_pack_salvage,
};
use serde_json::{Value, json};

use crate::args::{
    GlobalOptions, RepairCommand, RepairConfigArgs, RepairIndexArgs, RepairPacksArgs,
    RepairSnapshotsArgs,
};
use crate::output::print_json;
use crate::{exit, password, repo};

pub fn run(global: &GlobalOptions, command: RepairCommand) -> Result<u8> {
    match command {
        RepairCommand::Index(args) => index(global, &args),
        RepairCommand::Snapshots(args) => snapshots(global, &args),
        RepairCommand::Packs(args) => packs(global, &args),
        RepairCommand::Config(args) => config(global, &args),
    }
}

/// Exit 0 once the new config is written (and opens); the repository's location and the
/// password are the usual ones (a key file cannot be used: it is checked against the
/// config).
fn config(global: &GlobalOptions, args: &RepairConfigArgs) -> Result<u8> {
    if let Some(key_file) = &global.key_file {
        anyhow::bail!(
            "repair config opens a key slot with a password; --key-file / BUNKER_KEY_FILE ({}) \
             cannot be used",
            key_file.display()
        );
    }
    let params = super::init::repository_params(&args.params)?;
    let backend = repo::open_backend_for_config_repair(global)?;
    let password = password::repository_password(global, false)?;
    let rebuild = rebuild_config(backend, password.as_bytes(), params, args.dry_run)?;
    let id = hex::encode(rebuild.config.header.repository_id);
    let p = &rebuild.config.params;
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "damage": rebuild.damage,
            "header_kept": rebuild.header_kept,
            "key_slot": rebuild.slot.to_hex(),
            "repository_id": id,
            "compression_level": p.compression_level,
            "volume_chunk_size": p.volume_chunk_size,
            "lock": p.lock.map(|lock| json!({
                "mode": lock.mode.to_string(),
                "period_seconds": lock.period.as_secs(),
            })),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", rebuild.damage)?;
        writeln!(
            out,
            "{} a config for repository {} (key slot {}; {}): zstd level {}, volume chunks of {} KiB{}",
            if args.dry_run { "would write" } else { "wrote" },
            &id[..8],
            rebuild.slot.short(),
            if rebuild.header_kept {
                "header kept"
            } else {
                "header rebuilt"
            },
            p.compression_level,
            p.volume_chunk_size / 1024,
            p.lock.map_or(String::new(), |lock| format!(
                ", Object Lock {} for {} s",
                lock.mode,
                lock.period.as_secs()
            )),
        )?;
    }
    Ok(exit::OK)
}

/// Exit 0 when no blob was lost (nothing was damaged, or every blob of the damaged packs
/// was copied); 4 when blobs were lost.
fn packs(global: &GlobalOptions, args: &RepairPacksArgs) -> Result<u8> {
    let repository = repo::open(global, "repair")?.bypassing_cache();
    let packs = args
        .packs
        .iter()
        .map(|text| parse_pack_name(text))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan_pack_salvage(
        &repository,
        &SalvageOptions {
            packs,
            threads: 0,
            host: platform::hostname(),
        },
    )?;
    let report = if args.dry_run {
        SalvageReport {
            damaged: plan.damaged.clone(),
            intact_packs: plan.intact_packs.clone(),
            ..SalvageReport::default()
        }
    } else {
        apply_pack_salvage(&repository, plan)?
    };
    let (copied, lost) = (report.blobs_copied(), report.blobs_lost());
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "intact_packs": report.intact_packs,
            "damaged_packs": report.damaged.iter().map(|d| json!({
                "pack": d.name,
                "damage": d.damage,
                "untouched": report.untouched.contains(&d.pack),
                "from_host_copy": d.from_copy,
                "blobs_copied": d.intact.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
                "blobs_lost": d.lost.iter().map(|(id, why)| json!({
                    "id": id.to_hex(),
                    "reason": why,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "blobs_copied": copied,
            "blobs_lost": lost,
            "segments_replaced": report.segments_replaced.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "segments_written": report.segments_written.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "segments_left": report.segments_left.iter().map(|(segment, why)| json!({
                "segment": segment,
                "reason": why,
            })).collect::<Vec<_>>(),
            "packs_deleted": report.packs_deleted,
            "packs_left": report.packs_left.iter().map(|(pack, why)| json!({
                "pack": pack,
                "reason": why,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        let (copy_verb, lose_verb) = if args.dry_run {
            ("would copy", "would lose")
        } else {
            ("copied", "lost")
        };
        for damaged in &report.damaged {
            writeln!(out, "{}: {}", damaged.name, damaged.damage.join("; "))?;
            if report.untouched.contains(&damaged.pack) {
                writeln!(
                    out,
                    "  left as it is: {} blobs intact, {} do not open",
                    damaged.intact.len(),
                    damaged.lost.len()
                )?;
                continue;
            }
            writeln!(
                out,
                "  {copy_verb} {} blobs to new packs, {lose_verb} {}",
                damaged.intact.len(),
                damaged.lost.len()
            )?;
            for (id, _) in &damaged.lost {
                writeln!(out, "  {lose_verb} blob {id}")?;
            }
        }
        for (segment, why) in &report.segments_left {
            writeln!(out, "warning: {segment} is not replaced yet: {why}")?;
        }
        for (pack, why) in &report.packs_left {
            writeln!(out, "warning: {pack} stays in storage: {why}")?;
        }
        writeln!(
            out,
            "{} damaged packs ({} read intact): {copy_verb} {copied} blobs, {lose_verb} {lost}{}",
            report.damaged.len(),
            report.intact_packs.len(),
            if args.dry_run {
                String::new()
            } else {
                format!(
                    "; replaced {} index segments, deleted {} packs",
                    report.segments_replaced.len(),
                    report.packs_deleted.len()
                )
            }
        )?;
        if !report.segments_left.is_empty() {
            writeln!(
                out,
                "the damaged packs stay indexed until the locks above lapse; run `bunker repair \
                 packs` again then"
            )?;
        } else if lost > 0 {
            writeln!(
                out,
                "the next backup of a source that still holds the lost blobs' data stores them \
                 again, and every snapshot that refers to them is whole again; \
                 `bunker repair snapshots` rewrites those whose data cannot come back"
            )?;
        }
    }
    Ok(if lost == 0 {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}

fn problems_json(list: &[Problem]) -> Vec<Value> {
    list.iter()
        .map(|p| json!({ "object": p.object, "message": p.message }))
        .collect()
}

/// Exit 0 when the index now covers every readable pack; 4 when some pack cannot be read.
fn index(global: &GlobalOptions, args: &RepairIndexArgs) -> Result<u8> {
    let repository = repo::open(global, "repair")?.bypassing_cache();
    let plan = plan_index_repair(&repository, 0)?;
    let report = if args.dry_run || plan.is_empty() {
        plan.report().clone()
    } else {
        apply_index_repair(&repository, plan)?
    };
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "packs": report.packs,
            "packs_reindexed": report.packs_reindexed,
            "blobs_reindexed": report.blobs_reindexed,
            "packs_unreadable": problems_json(&report.packs_unreadable),
            "packs_dropped": report.packs_dropped,
            "segments_replaced": problems_json(&report.segments_replaced),
            "segments_written": report.segments_written.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "segments_kept": problems_json(&report.segments_kept),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        let (index_verb, replace_verb, drop_verb) = if args.dry_run {
            ("would index", "would replace", "would drop")
        } else {
            ("indexed", "replaced", "dropped")
        };
        for pack in &report.packs_reindexed {
            writeln!(out, "{index_verb} {pack}")?;
        }
        for segment in &report.segments_replaced {
            writeln!(
                out,
                "{replace_verb} {}: {}",
                segment.object, segment.message
            )?;
        }
        for pack in &report.packs_dropped {
            writeln!(
                out,
                "{drop_verb} {pack} from the index: it is missing from storage"
            )?;
        }
        for segment in &report.segments_kept {
            writeln!(out, "warning: {}: {}", segment.object, segment.message)?;
        }
        for pack in &report.packs_unreadable {
            writeln!(
                out,
                "error: {}: cannot read its trailer: {}",
                pack.object, pack.message
            )?;
        }
        writeln!(
            out,
            "{} packs in storage; {} {} packs ({} blobs) into {}new index segments, {} {} segments{}",
            report.packs,
            index_verb,
            report.packs_reindexed.len(),
            report.blobs_reindexed,
            if args.dry_run {
                String::new()
            } else {
                format!("{} ", report.segments_written.len())
            },
            replace_verb,
            report.segments_replaced.len(),
            if report.packs_unreadable.is_empty() {
                String::new()
            } else {
                format!("; {} packs unreadable", report.packs_unreadable.len())
            }
        )?;
    }
    Ok(if report.packs_unreadable.is_empty() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}

/// Exit 0 when every broken snapshot was replaced (or none was broken); 4 when some cannot
/// be repaired.
fn snapshots(global: &GlobalOptions, args: &RepairSnapshotsArgs) -> Result<u8> {
    let repository = repo::open(global, "repair")?.bypassing_cache();
    let plan = plan_snapshot_repair(
        &repository,
        &RepairSnapshotsOptions {
            read_data: !args.no_read_data,
            threads: 0,
            host: platform::hostname(),
        },
    )?;
    // (old id, new id if written, removed paths)
    let (done, unrepairable, intact) = if args.dry_run {
        let done: Vec<_> = plan
            .repairs
            .iter()
            .map(|r| (r.old, None, r.removed.clone()))
            .collect();
        (done, plan.unrepairable.clone(), plan.intact)
    } else {
        let report = apply_snapshot_repair(&repository, plan)?;
        let done = report
            .repaired
            .into_iter()
            .map(|r| (r.old, Some(r.new), r.removed))
            .collect();
        (done, report.unrepairable, report.intact)
    };
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "intact": intact,
            "repaired": done.iter().map(|(old, new, removed)| json!({
                "old": old.to_hex(),
                "new": new.map(|id| id.to_hex()),
                "removed": removed,
            })).collect::<Vec<_>>(),
            "unrepairable": unrepairable.iter().map(|(id, why)| json!({
                "id": id.to_hex(),
                "reason": why,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for (old, new, removed) in &done {
            match new {
                Some(new) => writeln!(
                    out,
                    "snapshot {} replaced by {} (tag repaired={}), leaving out {} entries:",
                    old.short(),
                    new.short(),
                    old.short(),
                    removed.len()
                )?,
                None => writeln!(
                    out,
                    "would replace snapshot {}, leaving out {} entries:",
                    old.short(),
                    removed.len()
                )?,
            }
            for path in removed {
                writeln!(out, "  {path}")?;
            }
        }
        for (id, why) in &unrepairable {
            writeln!(
                out,
                "error: snapshot {} cannot be repaired: {why}",
                id.short()
            )?;
        }
        writeln!(
            out,
            "{} snapshots intact, {} {}, {} cannot be repaired",
            intact,
            done.len(),
            if args.dry_run {
                "to repair"
            } else {
                "repaired"
            },
            unrepairable.len()
        )?;
    }
    Ok(if unrepairable.is_empty() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}
