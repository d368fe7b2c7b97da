//! Finalizers this cluster uses that vmrecover does not know (add-ons add their own): on this
//! node's VMIs and their VMs, or with `--site` on every VM of the site (one metadata-only,
//! paged list). An unknown finalizer would leave its VM stuck after an outage.

use std::collections::BTreeMap;

use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::{Api, Client};

use super::Check;
use crate::cluster::{describe, VirtualMachine, VirtualMachineInstance};
use crate::config::Config;
use crate::recovery::{classify, FinalizerClass, ObjectKind};

const NAME: &str = "finalizers.unknown";

/// Unknown finalizer → objects carrying it (`vmi ns/name`).
type Found = BTreeMap<(ObjectKind, String), Vec<String>>;

fn note(
    found: &mut Found,
    kind: ObjectKind,
    ns: &str,
    name: &str,
    fins: &[String],
    also: &[String],
) {
    for f in fins {
        if classify(f, kind, also) == FinalizerClass::Unknown {
            found
                .entry((kind, f.clone()))
                .or_default()
                .push(format!("{kind} {ns}/{name}"));
        }
    }
}

/// The verdict on what was found among `scope`.
fn verdict(found: &Found, scope: &str, also: &[String]) -> Check {
    if found.is_empty() {
        return Check::ok(NAME, format!("every finalizer on {scope} is known"));
    }
    let lines: Vec<String> = found
        .iter()
        .map(|((kind, f), objs)| {
            let more = if objs.len() > 3 {
                format!(" and {} more", objs.len() - 3)
            } else {
                String::new()
            };
            format!(
                "{f} on {kind} ({}{more})",
                objs[..objs.len().min(3)].join(", ")
            )
        })
        .collect();
    let mut names: Vec<String> = also.to_vec();
    for (_, f) in found.keys() {
        if !names.contains(f) {
            names.push(f.clone());
        }
    }
    Check::warn(
        NAME,
        format!("unknown finalizers on {scope}: {}", lines.join("; ")),
        format!(
            "find out which controller clears each; once reviewed, set alsoFinalizers: \"{}\" \
             (--also-finalizer) so a recovery may remove them",
            names.join(",")
        ),
    )
}

/// This node's VMIs and their VMs; with `site`, every VM too.
pub async fn checks(cfg: &Config, client: &Client, site: bool) -> Vec<Check> {
    let also = &cfg.policy.also_finalizers;
    let mut found = Found::new();
    let vmis = Api::<VirtualMachineInstance>::all(client.clone());
    let lp = ListParams::default().labels(&format!("kubevirt.io/nodeName={}", cfg.node));
    let list = match vmis.list(&lp).await {
        Ok(l) => l,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                describe(&e, "list", "virtualmachineinstances"),
                "grant list on virtualmachineinstances (the chart's RBAC does)",
            )]
        }
    };
    for vmi in &list.items {
        let ns = vmi.metadata.namespace.clone().unwrap_or_default();
        let name = vmi.metadata.name.clone().unwrap_or_default();
        note(
            &mut found,
            ObjectKind::Vmi,
            &ns,
            &name,
            vmi.metadata.finalizers.as_deref().unwrap_or(&[]),
            also,
        );
        match Api::<VirtualMachine>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
        {
            Ok(Some(vm)) => note(
                &mut found,
                ObjectKind::Vm,
                &ns,
                &name,
                vm.metadata.finalizers.as_deref().unwrap_or(&[]),
                also,
            ),
            Ok(None) => {}
            Err(e) => {
                return vec![Check::fail(
                    NAME,
                    describe(&e, "get", &format!("virtualmachines {ns}/{name}")),
                    "grant get on virtualmachines (the chart's RBAC does)",
                )]
            }
        }
    }
    let mut out = vec![verdict(
        &found,
        &format!("this node's {} VMI(s) and their VMs", list.items.len()),
        also,
    )];
    if site {
        out.push(site_check(client, also).await);
    }
    out
}

async fn site_check(client: &Client, also: &[String]) -> Check {
    const SITE: &str = "finalizers.site";
    let api = Api::<VirtualMachine>::all(client.clone());
    let mut found = Found::new();
    let mut count = 0usize;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = match api.list_metadata(&lp).await {
            Ok(p) => p,
            Err(e) => {
                return Check::fail(
                    SITE,
                    describe(&e, "list", "virtualmachines"),
                    "run --site with credentials that may list every VM",
                )
            }
        };
        for vm in &page.items {
            let vm: &PartialObjectMeta<VirtualMachine> = vm;
            count += 1;
            note(
                &mut found,
                ObjectKind::Vm,
                vm.metadata.namespace.as_deref().unwrap_or(""),
                vm.metadata.name.as_deref().unwrap_or(""),
                vm.metadata.finalizers.as_deref().unwrap_or(&[]),
                also,
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let mut c = verdict(&found, &format!("the site's {count} VM(s)"), also);
    c.name = SITE.into();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn unknown_finalizers_warn_with_the_value_that_covers_them() {
        let mut found = Found::new();
        let fins = vec![
            "kubevirt.io/virtualMachineControllerFinalize".to_string(),
            "example.com/backup-hold".to_string(),
        ];
        note(&mut found, ObjectKind::Vm, "d", "vm1", &fins, &[]);
        let c = verdict(&found, "x", &[]);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail
                .contains("example.com/backup-hold on vm (vm d/vm1)"),
            "{c:?}"
        );
        assert!(
            c.fix
                .contains("alsoFinalizers: \"example.com/backup-hold\""),
            "{c:?}"
        );
        let mut found = Found::new();
        note(
            &mut found,
            ObjectKind::Vm,
            "d",
            "vm1",
            &fins,
            &["example.com/backup-hold".into()],
        );
        assert_eq!(verdict(&found, "x", &[]).status, Status::Ok);
    }
}
