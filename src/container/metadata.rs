//! What a container log's path says about the container, with no API
//! call: the kubelet and Docker name their files after it.
//!
//! - `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log`
//!   (the kubelet's own folder; neither a namespace nor a pod name may hold
//!   `_`);
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`
//!   (the kubelet's links into the first);
//! - `/var/lib/docker/containers/<id>/<id>-json.log` (Docker).
//!
//! The result is added to each event of the file as one JSON member,
//! rendered once when the file is opened.

use std::path::Path;

/// What the path of a container's log names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMeta {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    /// The container's restart count (the kubelet's `<restart>.log`).
    pub restart: Option<u32>,
}

impl ContainerMeta {
    /// What `path` names, when it is laid out as the kubelet or Docker lay
    /// out their logs.
    pub fn of_path(path: &Path) -> Option<ContainerMeta> {
        let name = path.file_name()?.to_str()?;
        let parent = path.parent()?;
        let folder = parent.file_name()?.to_str()?;
        // /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log
        if let Some(restart) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u32>().ok())
            && let Some(pod_folder) = parent.parent().and_then(Path::file_name)
            && let Some(pod_folder) = pod_folder.to_str()
            && let [namespace, pod, uid] = pod_folder.split('_').collect::<Vec<_>>()[..]
            && !namespace.is_empty()
            && !pod.is_empty()
            && !uid.is_empty()
        {
            return Some(ContainerMeta {
                namespace: Some(namespace.to_owned()),
                pod: Some(pod.to_owned()),
                pod_uid: Some(uid.to_owned()),
                container: Some(folder.to_owned()),
                container_id: None,
                restart: Some(restart),
            });
        }
        // /var/lib/docker/containers/<id>/<id>-json.log
        if let Some(id) = name.strip_suffix("-json.log")
            && id == folder
            && is_container_id(id)
        {
            return Some(ContainerMeta {
                container_id: Some(id.to_owned()),
                ..ContainerMeta::default()
            });
        }
        // /var/log/containers/<pod>_<ns>_<container>-<id>.log
        let stem = name.strip_suffix(".log")?;
        let (rest, id) = stem.rsplit_once('-')?;
        if !is_container_id(id) {
            return None;
        }
        let [pod, namespace, container] = rest.splitn(3, '_').collect::<Vec<_>>()[..] else {
            return None;
        };
        Some(ContainerMeta {
            namespace: Some(namespace.to_owned()),
            pod: Some(pod.to_owned()),
            pod_uid: None,
            container: Some(container.to_owned()),
            container_id: Some(id.to_owned()),
            restart: None,
        })
    }

    /// The JSON member(s) to add to each event, starting with a comma:
    /// `,"kubernetes":{…}` for a pod's container (with the node, when
    /// known), `,"container":{"id":…}` for a container Docker runs alone.
    pub fn json_members(&self, node: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        let kubernetes = self.pod.is_some();
        out.extend_from_slice(if kubernetes {
            b",\"kubernetes\":{"
        } else {
            b",\"container\":{"
        });
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, key: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_str(out, key);
            out.push(b':');
        };
        for (key, value) in [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("pod_uid", &self.pod_uid),
            ("container", &self.container),
            (
                if kubernetes { "container_id" } else { "id" },
                &self.container_id,
            ),
        ] {
            if let Some(v) = value {
                member(&mut out, key);
                push_json_str(&mut out, v);
            }
        }
        if let Some(r) = self.restart {
            member(&mut out, "restart");
            out.extend_from_slice(itoa::Buffer::new().format(r).as_bytes());
        }
        if let Some(node) = node.filter(|n| !n.is_empty()) {
            member(&mut out, "node");
            push_json_str(&mut out, node);
        }
        out.push(b'}');
        out
    }
}

/// `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// A runtime's container id: 64 hex digits.
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0e6a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbcc0";

    #[test]
    fn the_kubelets_pod_folders() {
        let m = ContainerMeta::of_path(Path::new(
            "/var/log/pods/shop_web-7d9c_0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f/nginx/2.log",
        ))
        .expect("a pod's log");
        assert_eq!(m.namespace.as_deref(), Some("shop"));
        assert_eq!(m.pod.as_deref(), Some("web-7d9c"));
        assert_eq!(
            m.pod_uid.as_deref(),
            Some("0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f")
        );
        assert_eq!(m.container.as_deref(), Some("nginx"));
        assert_eq!(m.restart, Some(2));
        let json = m.json_members(Some("node-1"));
        let v: serde_json::Value =
            serde_json::from_slice(&[b"{\"x\":0", &json[..], b"}"].concat()).expect("JSON");
        assert_eq!(v["kubernetes"]["pod"], "web-7d9c");
        assert_eq!(v["kubernetes"]["node"], "node-1");
        assert_eq!(v["kubernetes"]["restart"], 2);
    }

    #[test]
    fn the_kubelets_links_and_dockers_folders() {
        let m = ContainerMeta::of_path(Path::new(&format!(
            "/var/log/containers/web-7d9c_shop_nginx-{ID}.log"
        )))
        .expect("a link's name");
        assert_eq!(
            (
                m.pod.as_deref(),
                m.namespace.as_deref(),
                m.container.as_deref()
            ),
            (Some("web-7d9c"), Some("shop"), Some("nginx"))
        );
        assert_eq!(m.container_id.as_deref(), Some(ID));
        let m = ContainerMeta::of_path(Path::new(&format!(
            "/var/lib/docker/containers/{ID}/{ID}-json.log"
        )))
        .expect("Docker's");
        assert_eq!(m.container_id.as_deref(), Some(ID));
        let v: serde_json::Value =
            serde_json::from_slice(&[b"{\"x\":0", &m.json_members(None)[..], b"}"].concat())
                .expect("JSON");
        assert_eq!(v["container"]["id"], ID);
    }

    #[test]
    fn other_paths_name_no_container() {
        for p in [
            "/var/log/nginx/access.log",
            "/var/log/pods/not-a-pod/nginx/0.log",
            "/var/log/containers/short-abc.log",
            "/var/lib/docker/containers/abc/def-json.log",
        ] {
            assert_eq!(ContainerMeta::of_path(Path::new(p)), None, "{p}");
        }
    }
}
