//! `bunker key list|add|remove|passwd`.

use std::io::Write;

use anyhow::{Result, bail};
use bunker_agent::platform;
use bunker_repo_format::keyslot::KeySlotInfo;
use bunker_repo_format::tree::Timestamp;
use serde_json::{Value, json};

use crate::args::{GlobalOptions, KeyCommand};
use crate::output::{local_time, print_json, rfc3339};
use crate::{exit, password, repo};

fn slot_info(label: &str) -> KeySlotInfo {
    KeySlotInfo {
        created: bunker_agent::backup::now().sec,
        host: platform::hostname(),
        username: platform::username(),
        label: label.to_owned(),
    }
}

pub fn run(global: &GlobalOptions, command: KeyCommand) -> Result<u8> {
    let repository = repo::open(global, "managing keys")?;
    match command {
        KeyCommand::List => {
            let current = repository.current_key_slot();
            let slots = repository.key_slots()?;
            if global.json {
                let list: Vec<Value> = slots
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id.to_hex(),
                            "short_id": s.id.short(),
                            "current": Some(s.id) == current,
                            "created": rfc3339(Timestamp { sec: s.info.created, nsec: 0 }),
                            "host": s.info.host,
                            "username": s.info.username,
                            "label": s.info.label,
                        })
                    })
                    .collect();
                print_json(&Value::Array(list))?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    " {:<8}  {:<19}  {:<16}  {:<12}  label",
                    "id", "created", "host", "user"
                )?;
                for s in &slots {
                    writeln!(
                        out,
                        "{}{:<8}  {:<19}  {:<16}  {:<12}  {}",
                        if Some(s.id) == current { '*' } else { ' ' },
                        s.id.short(),
                        local_time(Timestamp {
                            sec: s.info.created,
                            nsec: 0
                        }),
                        s.info.host,
                        s.info.username,
                        s.info.label
                    )?;
                }
            }
        }
        KeyCommand::Add(args) => {
            if let Some(out) = &args.out {
                let key_file = repository.key_file(args.put_only)?;
                key_file.write_new(out)?;
                let kind = if args.put_only { "put-only" } else { "full" };
                if global.json {
                    print_json(&json!({ "key_file": out, "put_only": args.put_only }))?;
                } else {
                    writeln!(
                        std::io::stdout(),
                        "wrote a {kind} key file to {}",
                        out.display()
                    )?;
                }
                return Ok(exit::OK);
            }
            let new = password::new_password(args.password.new_password_file.as_deref())?;
            let id = repository.add_key_slot(new.as_bytes(), &slot_info(&args.password.label))?;
            report(global, "added key slot", &id.to_hex())?;
        }
        KeyCommand::Remove { id } => {
            let spec = id.to_ascii_lowercase();
            let matches: Vec<_> = repository
                .key_slots()?
                .into_iter()
                .filter(|s| s.id.to_hex().starts_with(&spec))
                .collect();
            let slot = match matches.as_slice() {
                [slot] => slot.id,
                [] => bail!("no key slot matches {id:?}"),
                _ => bail!("{} key slots match {id:?}; give more digits", matches.len()),
            };
            repository.remove_key_slot(&slot)?;
            report(global, "removed key slot", &slot.to_hex())?;
        }
        KeyCommand::Passwd(args) => {
            let new = password::new_password(args.new_password_file.as_deref())?;
            // The new slot is proven to open before the old one (the one in use) goes.
            let id = repository.change_password(new.as_bytes(), &slot_info(&args.label))?;
            report(global, "changed password; new key slot", &id.to_hex())?;
        }
    }
    Ok(exit::OK)
}

fn report(global: &GlobalOptions, what: &str, id: &str) -> std::io::Result<()> {
    if global.json {
        print_json(&json!({ "id": id }))
    } else {
        writeln!(std::io::stdout(), "{what} {}", &id[..8])
    }
}
