//! The host directories behind a pod's volumes: claims bound to a
//! PersistentVolume (one directory per volume, kept until the volume is
//! deleted), `emptyDir`s, and ConfigMap, Secret, projected and downward API
//! volumes whose files are written before the containers start and kept
//! current while the pod runs ([`super::projection`] and
//! [`super::projected`] decide the files; a projected volume's
//! ServiceAccount token is issued here, once, bound to the pod). Full or
//! wiped volumes are `faults`'; mount paths inside containers are
//! [`super::rewrite`]'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use super::env::object_data;
use super::projected::{Part, Projected as ProjectedVolume, field_file};
use super::projection::{self, Contents, File};
use super::rewrite::{self, Mounts};
use super::state::{Inner, PodCtx, Projected, Wait, lock, wait};
use super::volume;
use super::workdir::mkdir;
use crate::cluster::Cluster;

impl Inner {
    /// The host directories behind the pod's volumes, creating them.
    pub(super) fn prepare_volumes(
        &self,
        ctx: &PodCtx,
    ) -> std::result::Result<HashMap<String, PathBuf>, Wait> {
        let c = self
            .cluster()
            .ok_or_else(|| wait("ContainerCreating", "the control plane is gone"))?;
        let run_as = self
            .run_as
            .as_ref()
            .map_err(|m| wait("CreateContainerError", m.clone()))?;
        let spec = ctx.pod.spec.clone().unwrap_or_default();
        let fail = |e: std::io::Error| {
            wait(
                "CreateContainerConfigError",
                format!("cannot prepare a volume: {e}"),
            )
        };
        let mut out = HashMap::new();
        let mut claims = vec![];
        // Mount paths are needed to rewrite file contents, so they are
        // computed first from every container's mounts.
        let mut pending_files = vec![];
        for v in spec.volumes.iter().flatten() {
            let dir = ctx.dir.join("volumes").join(&v.name);
            if let Some(pvc) = &v.persistent_volume_claim {
                let claim = c
                    .store
                    .get("/persistentvolumeclaims", &ctx.ns, &pvc.claim_name)
                    .ok_or_else(|| {
                        wait(
                            "ContainerCreating",
                            format!("persistentvolumeclaim \"{}\" not found", pvc.claim_name),
                        )
                    })?;
                let pv = claim
                    .pointer("/spec/volumeName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        wait(
                            "ContainerCreating",
                            format!("persistentvolumeclaim \"{}\" is not bound", pvc.claim_name),
                        )
                    })?;
                let host = self.work.join("volumes").join(pv);
                if !host.exists() {
                    mkdir(&host, 0o755)
                        .map_err(|e| wait("CreateContainerConfigError", e.to_string()))?;
                    volume::mount(&host);
                    run_as.own(&host).map_err(fail)?;
                }
                claims.push(host.clone());
                out.insert(v.name.clone(), host);
            } else if let Some(source) = projection::Source::of(v) {
                pending_files.push((v.name.clone(), Contents::Object(source)));
                out.insert(v.name.clone(), dir);
            } else if let Some(volume) = ProjectedVolume::of(v) {
                let tokens = vec![];
                pending_files.push((v.name.clone(), Contents::Projected { volume, tokens }));
                out.insert(v.name.clone(), dir);
            } else {
                // emptyDir, and anything else, is an empty directory of the pod.
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(fail)?;
                    run_as.own(&dir).map_err(fail)?;
                }
                out.insert(v.name.clone(), dir);
            }
        }
        *ctx.claims() = claims;
        let mounts = Mounts::new(
            spec.init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
                .flat_map(|ct| ctx.mounts_of(&out, ct))
                .collect(),
        );
        let rewrite_text = |t: &str| rewrite::rewrite_paths(t, &mounts);
        let mut projections = vec![];
        // Tokens last: none is issued for a pod still waiting for an object.
        pending_files.sort_by_key(|(_, contents)| {
            matches!(contents, Contents::Projected { volume, .. } if volume.has_token())
        });
        for (volume, mut contents) in pending_files {
            // Files that follow objects: written now, kept current.
            let dir = &out[&volume];
            if let Contents::Projected {
                volume: projected,
                tokens,
            } = &mut contents
            {
                *tokens = self.issue_tokens(&c, ctx, &volume, projected)?;
            }
            let files = self
                .volume_files(&c, ctx, &contents, &rewrite_text)
                .map_err(|u| match u {
                    Unmade::Missing(m) => wait("ContainerCreating", m),
                    Unmade::Invalid(m) => wait("CreateContainerConfigError", m),
                })?;
            projection::write(dir, &files, run_as).map_err(|e| {
                wait(
                    "CreateContainerConfigError",
                    format!("cannot write volume {}: {e}", dir.display()),
                )
            })?;
            projections.push(projection::Projection {
                dir: dir.clone(),
                contents,
                files: files.into_iter().map(|f| f.rel).collect(),
            });
        }
        *ctx.projected() = Projected {
            mounts: mounts.clone(),
            volumes: projections,
        };
        Ok(out)
    }

    /// Brings the files of a running pod's ConfigMap, Secret and projected
    /// volumes up to date with their objects (see [`projection`]). An object that
    /// is gone, or lacks a key an item names, leaves the files as they
    /// are (the kubelet keeps the last good content); an optional one that
    /// is gone empties its volume.
    pub(super) fn refresh_projections(&self, c: &Cluster, ctx: &PodCtx) {
        let Ok(run_as) = &self.run_as else { return };
        let mut projected = ctx.projected();
        let Projected { mounts, volumes } = &mut *projected;
        let rewrite_text = |t: &str| rewrite::rewrite_paths(t, mounts);
        for p in volumes.iter_mut() {
            if ctx.stopping() {
                return;
            }
            let files = match self.volume_files(c, ctx, &p.contents, &rewrite_text) {
                Ok(files) => files,
                Err(Unmade::Missing(_)) => continue,
                Err(Unmade::Invalid(why)) => {
                    tracing::warn!(pod = %ctx.name, "{why}; volume not updated");
                    continue;
                }
            };
            match projection::update(&p.dir, &p.files, &files, run_as) {
                Ok(changed) => {
                    if changed {
                        tracing::debug!(pod = %ctx.name, dir = %p.dir.display(), "volume updated");
                    }
                    p.files = files.into_iter().map(|f| f.rel).collect();
                }
                Err(e) => {
                    tracing::warn!(pod = %ctx.name, dir = %p.dir.display(), error = %e, "cannot update volume");
                }
            }
        }
    }

    /// The files of a volume that follows objects, as they are now: a
    /// ConfigMap's or Secret's keys, or a projected volume's sources in
    /// order (its tokens as issued when the pod started). An optional
    /// object that is missing contributes nothing.
    pub(super) fn volume_files(
        &self,
        c: &Cluster,
        ctx: &PodCtx,
        contents: &Contents,
        rewrite_text: &dyn Fn(&str) -> String,
    ) -> std::result::Result<Vec<File>, Unmade> {
        let object = |source: &projection::Source| match object_data(
            c,
            source.plural,
            &ctx.ns,
            &source.name,
        ) {
            Some(data) => projection::files(source, &data, rewrite_text).map_err(Unmade::Invalid),
            None if source.optional => Ok(vec![]),
            None => Err(Unmade::Missing(format!(
                "{} \"{}\" not found",
                source.kind, source.name
            ))),
        };
        let (volume, tokens) = match contents {
            Contents::Object(source) => return object(source),
            Contents::Projected { volume, tokens } => (volume, tokens),
        };
        let mut files = vec![];
        for part in &volume.parts {
            match part {
                Part::Object(source) => files.extend(object(source)?),
                Part::Fields {
                    items,
                    default_mode,
                } => {
                    for item in items {
                        let text = field_file(&ctx.pod, item).map_err(Unmade::Invalid)?;
                        let Some(rel) = projection::safe_rel(&item.path) else {
                            continue;
                        };
                        files.push(File {
                            rel,
                            content: text.into_bytes(),
                            mode: item.mode.unwrap_or(*default_mode) as u32 & 0o7777,
                        });
                    }
                }
                Part::Token { path, .. } => {
                    files.extend(
                        tokens
                            .iter()
                            .filter(|t| t.rel.as_os_str() == path.as_str())
                            .cloned(),
                    );
                }
                Part::Unsupported(what) => {
                    return Err(Unmade::Invalid(format!(
                        "projected volume source {what} is not supported by the sandbox"
                    )));
                }
            }
        }
        Ok(files)
    }

    /// Issues the tokens a projected volume's `serviceAccountToken`
    /// sources ask for, as the kubelet requests them (TokenRequest for the
    /// pod's ServiceAccount, bound to the pod); until one can be issued the
    /// pod waits in `ContainerCreating` with the kubelet's message.
    fn issue_tokens(
        &self,
        c: &Cluster,
        ctx: &PodCtx,
        volume: &str,
        projected: &ProjectedVolume,
    ) -> std::result::Result<Vec<File>, Wait> {
        let spec = ctx.pod.spec.as_ref();
        let account = spec
            .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let mut files = vec![];
        for part in &projected.parts {
            let Part::Token {
                path,
                expiration_seconds,
                audience,
                mode,
            } = part
            else {
                continue;
            };
            let Some(rel) = projection::safe_rel(path) else {
                continue;
            };
            let token = crate::auth::service_account_token(
                c,
                &ctx.ns,
                &account,
                Some((&ctx.name, &ctx.uid)),
                *expiration_seconds,
                audience.as_slice(),
            )
            .map_err(|e| {
                let why = match &e {
                    crate::error::Error::Api(status) => status.message.clone(),
                    other => {
                        let mut text = other.to_string();
                        let mut source = std::error::Error::source(other);
                        while let Some(s) = source {
                            text.push_str(&format!(": {s}"));
                            source = s.source();
                        }
                        text
                    }
                };
                wait(
                    "ContainerCreating",
                    format!(
                        "MountVolume.SetUp failed for volume \"{volume}\" : failed to fetch token: {why}"
                    ),
                )
            })?;
            files.push(File {
                rel,
                content: token.into_bytes(),
                mode: *mode as u32 & 0o7777,
            });
        }
        Ok(files)
    }
}

/// Why a volume's files cannot be made.
pub(super) enum Unmade {
    /// An object it needs is missing: the pod waits for it.
    Missing(String),
    /// Its spec cannot be met (an item naming a missing key, a source the
    /// sandbox does not project).
    Invalid(String),
}

/// Keeps the ConfigMap and Secret volumes of running pods current (see
/// [`projection`]): `volume_sync_delay` after a ConfigMap or Secret
/// changes, and every half minute in case a change was missed (a pod that
/// was writing its volumes at the time, a lagging subscription).
pub(super) async fn sync_projected_volumes(
    inner: Weak<Inner>,
    cluster: Weak<Cluster>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::store::Event>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    const RESYNC: Duration = Duration::from_secs(30);
    loop {
        let _ = tokio::time::timeout(RESYNC, async {
            loop {
                match rx.recv().await {
                    Ok(e) if matches!(e.key.as_str(), "/configmaps" | "/secrets") => return,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        let Some(delay) = inner.upgrade().map(|i| i.config.volume_sync_delay) else {
            return;
        };
        tokio::time::sleep(delay).await;
        // Changes during the wait are covered by this pass.
        while !matches!(
            rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty
                | tokio::sync::broadcast::error::TryRecvError::Closed)
        ) {}
        let (Some(inner), Some(c)) = (inner.upgrade(), cluster.upgrade()) else {
            return;
        };
        let pods: Vec<Arc<PodCtx>> = lock(&inner.pods).values().cloned().collect();
        for ctx in pods {
            inner.refresh_projections(&c, &ctx);
        }
    }
}

/// Removes the directories of volumes whose PersistentVolume is gone (the
/// claim was deleted and the reclaim policy was Delete; a Retained volume
/// keeps its PersistentVolume and so its data).
pub(super) fn reclaim_volumes(inner: &Inner, c: &Cluster) {
    let Ok(entries) = std::fs::read_dir(inner.work.join("volumes")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if c.store.get("/persistentvolumes", "", &name).is_none()
            && !lock(&inner.releasing).contains_key(&e.path())
        {
            tracing::debug!(volume = %name, "removing the data of a deleted volume");
            volume::release(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
