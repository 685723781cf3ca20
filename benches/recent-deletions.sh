# Sourced by the whole-process benchmarks (peers.sh, compare-restic.sh).
#
# On ext4 without a journal (the root filesystem of the machines these benchmarks ran on),
# the inode allocator passes over every inode freed less than 60 s ago, or less than 360 s
# ago while its inode table block is dirty (ext4's `recently_deleted()`), looking each one up
# on the way. Creating the Linux source tree's 78,579 files within minutes of deleting such
# a tree then costs any tool, restic and `cp -a` as much as bunker, 5-50 s of system time in
# the allocator instead of 2 (docs/PERFORMANCE.md, session 39). A script that deletes a tree
# notes it here; one that is about to measure the creation of a tree waits until the
# deletions noted no longer count. (benches/restore-vs-cp.sh instead gives each run a
# filesystem of its own.)

# Seconds after which a freed inode is taken again even from a dirty inode table block.
RECENT_DELETION_S=360

# journalless_ext4 DIR: whether DIR is on ext4 mounted without a journal.
journalless_ext4() {
    local source fstype
    read -r source fstype < <(findmnt -n -o SOURCE,FSTYPE --target "$1") || return 1
    [[ $fstype == ext4 ]] && ! compgen -G "/proc/fs/jbd2/${source##*/}-*" > /dev/null
}

# note_deletions DIR: a large tree on DIR's filesystem was deleted just now.
note_deletions() { date +%s > "$1/.last-tree-deletion"; }

# remove_tree PATH DIR: deletes PATH, if there is one, and notes it in DIR.
remove_tree() { [[ ! -e $1 ]] || { rm -rf "$1" && note_deletions "$2"; }; }

# wait_out_deletions DIR: sleeps until the deletions noted in DIR no longer slow the inode
# allocator down (at once on any other filesystem).
wait_out_deletions() {
    local stamp=$1/.last-tree-deletion left
    [[ -f $stamp ]] && journalless_ext4 "$1" || return 0
    left=$(($(cat "$stamp") + RECENT_DELETION_S - $(date +%s)))
    if ((left > 0)); then
        echo "waiting ${left} s: ext4 without a journal passes over inodes freed in the last" \
            "${RECENT_DELETION_S} s (benches/recent-deletions.sh)" >&2
        sleep "$left"
    fi
}
