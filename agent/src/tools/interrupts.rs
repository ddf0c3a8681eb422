//! /proc/interrupts: the machine-check row, summed over CPUs.
//!
//! Never: read the file; the stage passes its text.

/// Machine checks so far: the sum of the `MCE:` row over every CPU; `None`
/// where the kernel shows no such row (no MCE support, most VMs).
pub fn mce_count(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut seen = false;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(label) = parts.next() else { continue };
        if label == "MCE:" {
            seen = true;
            total += parts.map_while(|p| p.parse::<f64>().ok()).sum::<f64>();
        }
    }
    seen.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_without_machine_check_rows_has_no_count() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/misc/proc-interrupts-vm-2cpu-no-mce.txt"
        ))
        .unwrap();
        assert!(text.contains("LOC:"), "not a /proc/interrupts");
        assert_eq!(mce_count(&text), None);
    }

    #[test]
    fn the_mce_row_is_summed_over_cpus() {
        // The row as the kernel prints it (arch/x86/kernel/irq.c): label,
        // one count per CPU, then the description.
        let text = " LOC:  375 277 Local timer interrupts\n MCE:   0  2  Machine check exceptions\n MCP:  15568 15568 Machine check polls\n";
        assert_eq!(mce_count(text), Some(2.0));
    }
}
