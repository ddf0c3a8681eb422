//! The thermal sidecar's readings: hwmon (temp, fan, in, power), thermal
//! zones, and RAPL energy counters turned into power. Reads a sysfs root
//! given by the caller, per the kernel's hwmon sysfs ABI (millidegrees,
//! millivolts, microwatts, microjoules).
//!
//! Never: write to sysfs, or fail a read loudly: a sensor that vanishes or
//! returns garbage is skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::measurement::Kind;

use crate::sysfs::{entries, read, read_num};

/// One reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub kind: Kind,
    pub key: String,
    pub value: f64,
}

/// Reads sensors under a sysfs root; keeps RAPL state between calls.
pub struct Sidecar {
    sys: PathBuf,
    rapl_last: HashMap<String, (f64, Instant)>,
}

impl Sidecar {
    pub fn new(sys_root: &Path) -> Self {
        Self {
            sys: sys_root.to_path_buf(),
            rapl_last: HashMap::new(),
        }
    }

    /// Everything readable now.
    pub fn read(&mut self) -> Vec<Reading> {
        let mut out = self.hwmon();
        out.extend(self.thermal_zones());
        out.extend(self.rapl(Instant::now()));
        out
    }

    fn hwmon(&self) -> Vec<Reading> {
        let base = self.sys.join("class/hwmon");
        let mut out = Vec::new();
        for dev in entries(&base) {
            let dir = base.join(&dev);
            let name = read(&dir.join("name")).unwrap_or_else(|| dev.clone());
            for file in entries(&dir) {
                let Some(stem) = file.strip_suffix("_input") else {
                    continue;
                };
                let (kind, scale) = if stem.starts_with("temp") {
                    (Kind::Temp, 1e-3)
                } else if stem.starts_with("fan") {
                    (Kind::Fan, 1.0)
                } else if stem.starts_with("in") {
                    (Kind::PsuVolt, 1e-3)
                } else if stem.starts_with("power") {
                    (Kind::Power, 1e-6)
                } else {
                    continue;
                };
                let Some(raw) = read_num(&dir.join(&file)) else {
                    continue;
                };
                let label = read(&dir.join(format!("{stem}_label")))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| stem.to_string());
                out.push(Reading {
                    kind,
                    key: format!("{name}/{label}"),
                    value: raw * scale,
                });
            }
        }
        out
    }

    fn thermal_zones(&self) -> Vec<Reading> {
        let base = self.sys.join("class/thermal");
        entries(&base)
            .into_iter()
            .filter(|z| z.starts_with("thermal_zone"))
            .filter_map(|z| {
                let dir = base.join(&z);
                let kind = read(&dir.join("type")).unwrap_or(z);
                let milli = read_num(&dir.join("temp"))?;
                Some(Reading {
                    kind: Kind::Temp,
                    key: format!("thermal/{kind}"),
                    value: milli / 1000.0,
                })
            })
            .collect()
    }

    fn rapl(&mut self, now: Instant) -> Vec<Reading> {
        let base = self.sys.join("class/powercap");
        let mut out = Vec::new();
        for dom in entries(&base)
            .into_iter()
            .filter(|d| d.starts_with("intel-rapl:"))
        {
            let dir = base.join(&dom);
            let Some(uj) = read_num(&dir.join("energy_uj")) else {
                continue;
            };
            let name = read(&dir.join("name")).unwrap_or_else(|| dom.clone());
            let max = read_num(&dir.join("max_energy_range_uj"));
            if let Some((prev, at)) = self.rapl_last.insert(dom.clone(), (uj, now)) {
                let secs = now.duration_since(at).as_secs_f64();
                let mut delta = uj - prev;
                if delta < 0.0 {
                    // The counter wrapped.
                    delta += max.unwrap_or(0.0);
                }
                if secs > 0.0 && delta >= 0.0 {
                    out.push(Reading {
                        kind: Kind::Power,
                        key: format!("rapl/{name}"),
                        value: delta / 1e6 / secs,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixture_tree() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/misc/hwmon-sysfs-tree-telegraf/sys")
    }

    #[test]
    fn reads_a_recorded_hwmon_tree() {
        let mut s = Sidecar::new(&fixture_tree());
        let got: Vec<(Kind, String, f64)> = s
            .read()
            .into_iter()
            .map(|r| (r.kind, r.key, r.value))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::Temp, "nvme/Composite".into(), 35.85),
                (Kind::Temp, "nvme/Sensor 1".into(), 35.85),
                (Kind::Temp, "nvme/Sensor 2".into(), 38.85),
                (Kind::Temp, "k10temp/Tctl".into(), 33.25),
                (Kind::Temp, "k10temp/Tccd1".into(), 33.25),
            ]
        );
    }

    #[test]
    fn fans_volts_power_zones_and_rapl() {
        let t = tempfile::tempdir().unwrap();
        let w = |rel: &str, v: &str| {
            let p = t.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, v).unwrap();
        };
        w("class/hwmon/hwmon0/name", "nct6798\n");
        w("class/hwmon/hwmon0/fan1_input", "1200\n");
        w("class/hwmon/hwmon0/in0_input", "12096\n");
        w("class/hwmon/hwmon0/in0_label", "+12V\n");
        w("class/hwmon/hwmon0/power1_input", "95000000\n");
        w("class/hwmon/hwmon0/temp2_input", "garbage\n");
        w("class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
        w("class/thermal/thermal_zone0/temp", "47000\n");
        w("class/powercap/intel-rapl:0/name", "package-0\n");
        w("class/powercap/intel-rapl:0/energy_uj", "1000000\n");
        let mut s = Sidecar::new(t.path());
        let first = s.read();
        let keys: Vec<(Kind, &str, f64)> = first
            .iter()
            .map(|r| (r.kind, r.key.as_str(), r.value))
            .collect();
        assert_eq!(
            keys,
            vec![
                (Kind::Fan, "nct6798/fan1", 1200.0),
                (Kind::PsuVolt, "nct6798/+12V", 12.096),
                (Kind::Power, "nct6798/power1", 95.0),
                (Kind::Temp, "thermal/x86_pkg_temp", 47.0),
            ],
            "a garbage reading is skipped; RAPL needs two reads"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        w("class/powercap/intel-rapl:0/energy_uj", "3000000\n");
        let rapl = s
            .read()
            .into_iter()
            .find(|r| r.key == "rapl/package-0")
            .expect("rapl power");
        assert_eq!(rapl.kind, Kind::Power);
        // 2 J over ≥ 0.1 s: at most 20 W, and well above 0.
        assert!(rapl.value > 1.0 && rapl.value <= 20.0, "{}", rapl.value);
    }
}
