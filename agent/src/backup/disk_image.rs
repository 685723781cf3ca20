//! Disk images among the files of a backup, cut the way volumes are.
//!
//! A raw disk image (a virtual machine's disk kept as a file, a partition copied out with
//! `dd`) changes the way a block device does: blocks are rewritten where they are and
//! nothing is ever inserted, so content-defined cuts buy nothing there and cost a scan of
//! every byte. Such a file is cut at the multiples of the repository's volume chunk size
//! instead, as `backup --volume` cuts the same disk: the two ways of backing it up share
//! their chunks (all but those that straddle the file's holes), and a rewritten block
//! re-stores the one chunk that holds it (docs/PERFORMANCE.md, session 34, has what it does
//! to the vol corpus and to a real change of an image).
//!
//! Virtual disk files (qcow2, VMDK sparse extents, VDI, VHDX, dynamic VHD) change the same
//! way: they rewrite clusters in place and add new ones at their end, so they are cut the
//! same way (their clusters do not sit where the guest's blocks do, so they share no chunks
//! with a `--volume` backup of the disk). ISO 9660 images keep content-defined chunks: the
//! files in them move between releases.
//!
//! A file is taken for an image by what its first sectors hold: a partition table (GPT, or
//! an MBR whose four entries are well formed), the superblock of a filesystem or of a
//! volume format (ext2/3/4, XFS, btrfs, NTFS, exFAT, FAT, an LVM physical volume, LUKS) or
//! a virtual disk's header, each checked beyond its magic number where the format allows. A
//! file taken for an image by mistake is only cut differently: its bytes are stored and
//! restored the same.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Files smaller than this are cut by content whatever they hold: a few chunks either way.
pub(super) const MIN_IMAGE_SIZE: u64 = 16 << 20;

// Small files are read beside the walk with a chunking that never looks for images.
const _: () = assert!(super::small_files::SMALL_FILE < MIN_IMAGE_SIZE);

/// Bytes of a file's start that [`recognise`] looks at: up to the end of a btrfs
/// superblock's magic, at 64 KiB + 72.
pub(super) const HEAD: usize = (64 << 10) + 72;

/// What a file was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ImageFormat {
    /// A disk partitioned with a GUID partition table.
    Gpt,
    /// A disk partitioned with an MBR partition table.
    Mbr,
    /// An ext2, ext3 or ext4 filesystem.
    Ext,
    /// An XFS filesystem.
    Xfs,
    /// A btrfs filesystem.
    Btrfs,
    /// An NTFS filesystem.
    Ntfs,
    /// An exFAT filesystem.
    Exfat,
    /// A FAT12, FAT16 or FAT32 filesystem.
    Fat,
    /// An LVM2 physical volume.
    LvmPhysicalVolume,
    /// A LUKS encrypted volume.
    Luks,
    /// A QEMU copy-on-write disk (qcow, qcow2).
    Qcow,
    /// A VMware sparse extent (VMDK).
    Vmdk,
    /// A VirtualBox disk (VDI).
    Vdi,
    /// A Hyper-V disk (VHDX).
    Vhdx,
    /// A dynamic or differencing Virtual PC / Hyper-V disk (VHD; a fixed one is raw).
    Vhd,
}

/// Reads the first [`HEAD`] bytes of `file` (fewer if it is shorter) without moving its
/// offset and says which disk image they start, if any.
pub(super) fn recognise_file(file: &File) -> io::Result<Option<ImageFormat>> {
    let mut head = vec![0u8; HEAD];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(recognise(&head))
}

/// The format whose signature `head`, a file's first bytes, holds; `None` for anything
/// else. GPT comes before MBR, since a GPT disk starts with a protective MBR.
pub(super) fn recognise(head: &[u8]) -> Option<ImageFormat> {
    let at = |offset: usize, bytes: &[u8]| head.get(offset..offset + bytes.len()) == Some(bytes);
    let u16_le = |offset: usize| {
        head.get(offset..offset + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_le = |offset: usize| {
        head.get(offset..offset + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let boot_signature = at(510, &[0x55, 0xaa]);

    // The GPT header is in the second logical block: at 512, or at 4096 on 4Kn disks.
    if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        return Some(ImageFormat::Gpt);
    }
    // LUKS1 and LUKS2 headers: magic, then a big-endian version 1 or 2.
    if at(0, b"LUKS\xba\xbe") && (at(6, &[0, 1]) || at(6, &[0, 2])) {
        return Some(ImageFormat::Luks);
    }
    // XFS: magic, then the block size (big-endian), a power of two from 512 to 64 KiB.
    if at(0, b"XFSB")
        && head.get(4..8).is_some_and(|b| {
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            size.is_power_of_two() && (512..=65536).contains(&size)
        })
    {
        return Some(ImageFormat::Xfs);
    }
    // Virtual disks: qcow's magic then a big-endian version 1-3; a VMDK sparse extent's then
    // a little-endian version 1-3; VDI's signature after its 64-byte text; VHDX's file
    // identifier; a dynamic VHD's copy of its footer, at its start.
    if at(0, b"QFI\xfb") && (1..=3).any(|version: u8| at(4, &[0, 0, 0, version])) {
        return Some(ImageFormat::Qcow);
    }
    if at(0, b"KDMV") && (1..=3).any(|version: u8| at(4, &[version, 0, 0, 0])) {
        return Some(ImageFormat::Vmdk);
    }
    if at(64, &0xbeda_107f_u32.to_le_bytes()) {
        return Some(ImageFormat::Vdi);
    }
    if at(0, b"vhdxfile") {
        return Some(ImageFormat::Vhdx);
    }
    if at(0, b"conectix") {
        return Some(ImageFormat::Vhd);
    }
    if at((64 << 10) + 64, b"_BHRfS_M") {
        return Some(ImageFormat::Btrfs);
    }
    // ext2/3/4: the superblock at 1024 holds the magic at 56, the block size as a shift of
    // 1 KiB at 24 (up to 64 KiB) and the revision at 76 (0 or 1).
    if u16_le(1024 + 56) == Some(0xef53)
        && u32_le(1024 + 24).is_some_and(|shift| shift <= 6)
        && u32_le(1024 + 76).is_some_and(|revision| revision <= 1)
    {
        return Some(ImageFormat::Ext);
    }
    // LVM2: a label in one of the first four sectors, its type 24 bytes into it.
    if (0..4).any(|sector| at(sector * 512, b"LABELONE") && at(sector * 512 + 24, b"LVM2 001")) {
        return Some(ImageFormat::LvmPhysicalVolume);
    }
    if boot_signature && at(3, b"NTFS    ") {
        return Some(ImageFormat::Ntfs);
    }
    if boot_signature && at(3, b"EXFAT   ") {
        return Some(ImageFormat::Exfat);
    }
    if boot_signature && (at(54, b"FAT12   ") || at(54, b"FAT16   ") || at(82, b"FAT32   ")) {
        return Some(ImageFormat::Fat);
    }
    if boot_signature && mbr_partitions_well_formed(head) {
        return Some(ImageFormat::Mbr);
    }
    None
}

/// An MBR's four partition entries (16 bytes each from 446) are well formed: each one's
/// status is 0 or 0x80, and at least one is in use (a type, a first sector after the MBR
/// and a length). Boot code that happens to end in 0x55 0xAA rarely passes.
fn mbr_partitions_well_formed(head: &[u8]) -> bool {
    let Some(table) = head.get(446..510) else {
        return false;
    };
    let entries = || table.chunks_exact(16);
    let field = |entry: &[u8], at: usize| {
        u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
    };
    entries().all(|entry| entry[0] == 0 || entry[0] == 0x80)
        && entries().any(|entry| entry[4] != 0 && field(entry, 8) >= 1 && field(entry, 12) >= 1)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::{Arc, Mutex};

    use bunker_repo_format::tree::Extent;

    use super::super::fixed_chunks::FixedChunks;
    use super::super::read::test_common::noise;
    use super::super::read::tests::{
        file_extents, restore_source, small_chunks_repo, write_sparse,
    };
    use super::*;
    use crate::Cancel;
    use crate::backup::{BackupOptions, FileRead, FileSink, backup};

    /// Bytes written at an offset of a file's head.
    type Parts<'a> = Vec<(usize, &'a [u8])>;

    fn head_with(parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut head = vec![0u8; HEAD];
        for (offset, bytes) in parts {
            head[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
        head
    }

    /// An MBR with one Linux partition from sector 2048, 4096 sectors long.
    fn mbr_entry() -> Vec<u8> {
        let mut entry = vec![0u8; 16];
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
        entry[12..16].copy_from_slice(&4096u32.to_le_bytes());
        entry
    }

    #[test]
    fn each_format_is_recognised_by_its_signature() {
        let entry = mbr_entry();
        let ext = {
            let mut superblock = vec![0u8; 80];
            superblock[24..28].copy_from_slice(&2u32.to_le_bytes());
            superblock[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
            superblock[76..80].copy_from_slice(&1u32.to_le_bytes());
            superblock
        };
        let cases: Vec<(Parts, ImageFormat)> = vec![
            (vec![(512, b"EFI PART")], ImageFormat::Gpt),
            (vec![(4096, b"EFI PART")], ImageFormat::Gpt),
            // A GPT disk's protective MBR does not make it an MBR disk.
            (
                vec![(446, &entry), (510, &[0x55, 0xaa]), (512, b"EFI PART")],
                ImageFormat::Gpt,
            ),
            (vec![(446, &entry), (510, &[0x55, 0xaa])], ImageFormat::Mbr),
            (vec![(0, b"LUKS\xba\xbe\x00\x02")], ImageFormat::Luks),
            (vec![(0, b"XFSB\x00\x00\x10\x00")], ImageFormat::Xfs),
            (vec![((64 << 10) + 64, b"_BHRfS_M")], ImageFormat::Btrfs),
            (vec![(1024, &ext)], ImageFormat::Ext),
            (
                vec![(1024, b"LABELONE"), (1048, b"LVM2 001")],
                ImageFormat::LvmPhysicalVolume,
            ),
            (
                vec![(3, b"NTFS    "), (510, &[0x55, 0xaa])],
                ImageFormat::Ntfs,
            ),
            (
                vec![(3, b"EXFAT   "), (510, &[0x55, 0xaa])],
                ImageFormat::Exfat,
            ),
            (
                vec![(82, b"FAT32   "), (510, &[0x55, 0xaa])],
                ImageFormat::Fat,
            ),
            (
                vec![(54, b"FAT16   "), (510, &[0x55, 0xaa])],
                ImageFormat::Fat,
            ),
            (vec![(0, b"QFI\xfb\x00\x00\x00\x03")], ImageFormat::Qcow),
            (vec![(0, b"KDMV\x01\x00\x00\x00")], ImageFormat::Vmdk),
            (vec![(64, &[0x7f, 0x10, 0xda, 0xbe])], ImageFormat::Vdi),
            (vec![(0, b"vhdxfile")], ImageFormat::Vhdx),
            (vec![(0, b"conectix")], ImageFormat::Vhd),
        ];
        for (parts, format) in cases {
            assert_eq!(recognise(&head_with(&parts)), Some(format), "{parts:?}");
        }
    }

    #[test]
    fn a_magic_number_alone_or_a_malformed_header_is_not_an_image() {
        let entry = mbr_entry();
        let mut bad_status = mbr_entry();
        bad_status[0] = 0x12;
        let mut ext_block_shift_too_large = vec![0u8; 80];
        ext_block_shift_too_large[24..28].copy_from_slice(&30u32.to_le_bytes());
        ext_block_shift_too_large[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
        let cases: Vec<Parts> = vec![
            vec![],
            // The boot signature with no partition in use, or with a malformed entry.
            vec![(510, &[0x55, 0xaa])],
            vec![(446, &bad_status), (510, &[0x55, 0xaa])],
            // A partition entry without the boot signature.
            vec![(446, &entry)],
            vec![(0, b"LUKS\xba\xbe\x00\x07")],
            vec![(0, b"XFSB\x00\x00\x10\x01")],
            vec![(1024, &ext_block_shift_too_large)],
            vec![(1024, b"LABELONE")],
            vec![(3, b"NTFS    ")],
            vec![(82, b"FAT32   ")],
            vec![(0, b"QFI\xfb\x00\x00\x00\x09")],
            vec![(0, b"KDMV\x07\x00\x00\x00")],
            // ISO 9660 keeps its content-defined chunks.
            vec![(32769, b"CD001")],
        ];
        for parts in cases {
            assert_eq!(recognise(&head_with(&parts)), None, "{parts:?}");
        }
        // Short files: whatever fits is looked at, nothing past their end.
        assert_eq!(recognise(&[]), None);
        assert_eq!(
            recognise(&head_with(&[(512, b"EFI PART")])[..600]),
            Some(ImageFormat::Gpt)
        );
        assert_eq!(recognise(&head_with(&[(512, b"EFI PART")])[..519]), None);
    }

    /// Makes a `size`-byte file in `dir` holding what `mkfs` makes of it; `None` (a skip,
    /// but never under CI, whose test command installs e2fsprogs, btrfs-progs and
    /// qemu-utils) when the tool is missing.
    fn made_by(mkfs: &str, dir: &std::path::Path, size: u64) -> Option<File> {
        let image = dir.join(mkfs);
        File::create(&image)
            .and_then(|file| file.set_len(size))
            .expect("image file");
        let quiet = if mkfs == "mkfs.btrfs" { "-q" } else { "-F" };
        match std::process::Command::new(mkfs)
            .args(["-q", quiet])
            .arg(&image)
            .status()
        {
            Ok(status) if status.success() => Some(File::open(&image).expect("open image")),
            _ => {
                assert!(std::env::var_os("CI").is_none(), "CI must have {mkfs}");
                eprintln!("SKIPPED: {mkfs} is not installed");
                None
            }
        }
    }

    #[test]
    fn images_made_by_their_tools_are_recognised_from_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(file) = made_by("mkfs.ext4", dir.path(), 32 << 20) {
            assert_eq!(
                recognise_file(&file).expect("read head"),
                Some(ImageFormat::Ext)
            );
            // Looking does not move the file's offset: the read that follows starts at 0.
            let mut offset_probe = &file;
            assert_eq!(
                io::Seek::stream_position(&mut offset_probe).expect("position"),
                0
            );
        }
        if let Some(file) = made_by("mkfs.btrfs", dir.path(), 160 << 20) {
            assert_eq!(
                recognise_file(&file).expect("read head"),
                Some(ImageFormat::Btrfs)
            );
        }
        for (format, expected) in [
            ("qcow2", ImageFormat::Qcow),
            ("vmdk", ImageFormat::Vmdk),
            ("vdi", ImageFormat::Vdi),
            ("vhdx", ImageFormat::Vhdx),
            ("vpc", ImageFormat::Vhd),
        ] {
            let image = dir.path().join(format!("disk.{format}"));
            match std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", format])
                .arg(&image)
                .arg("64M")
                .status()
            {
                Ok(status) if status.success() => {
                    let file = File::open(&image).expect("open image");
                    let found = recognise_file(&file).expect("read head");
                    assert_eq!(found, Some(expected), "{format}");
                }
                _ => {
                    assert!(std::env::var_os("CI").is_none(), "CI must have qemu-img");
                    eprintln!("SKIPPED: qemu-img is not installed");
                }
            }
        }
        let plain = dir.path().join("plain");
        std::fs::write(&plain, vec![7u8; 100_000]).expect("plain file");
        let file = File::open(&plain).expect("open plain");
        assert_eq!(recognise_file(&file).expect("read head"), None);
    }

    fn chunk_lengths(extents: &[Extent]) -> Vec<u64> {
        extents.iter().map(Extent::length).collect()
    }

    /// A disk image among other files is cut at the volume chunk size (and aligned to it),
    /// a file like it without the partition table by content; with `images_by_content` the
    /// image is cut by content too, and fixed chunks asked for cut both files. Both restore
    /// to their bytes every way.
    #[test]
    fn a_disk_image_among_files_is_cut_at_the_volume_chunk_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = tmp.path().join("src");
        fs::create_dir_all(&source).expect("src");
        let length = (MIN_IMAGE_SIZE as usize) + (3 << 20) + 12_345;
        let mut image = noise(length, 11);
        let plain = image.clone();
        image[512..520].copy_from_slice(b"EFI PART");
        fs::write(source.join("disk.img"), &image).expect("image");
        fs::write(source.join("plain.bin"), &plain).expect("plain");

        let asked = FixedChunks::new(64 << 10).expect("a valid size");
        for (run, images_by_content, fixed_chunks) in
            [(1, false, None), (2, true, None), (3, false, Some(asked))]
        {
            let repo = small_chunks_repo(&tmp.path().join(format!("repo{run}")));
            let volume_chunk = match fixed_chunks {
                Some(asked) => u64::from(asked.size()),
                None => u64::from(repo.config().params.volume_chunk_size),
            };
            let told = Arc::new(Mutex::new(Vec::new()));
            let sink = {
                let told = Arc::clone(&told);
                FileSink::new(move |file: &FileRead<'_>| {
                    let name = file.path.file_name().map(|n| n.to_owned());
                    told.lock().expect("lock").push((name, file.disk_image));
                })
            };
            let options = BackupOptions {
                paths: vec![source.clone()],
                host: "h".to_owned(),
                images_by_content,
                fixed_chunks,
                files_read: Some(sink),
                ..BackupOptions::default()
            };
            let outcome = backup(&repo, &options, &Cancel::new()).expect("backup");
            // The image is named as one only when it was cut as one.
            let cut_as_image = !images_by_content && fixed_chunks.is_none();
            let mut told = told.lock().expect("lock").clone();
            told.sort();
            let told_image = |name: &str| (Some(name.into()), name == "disk.img" && cut_as_image);
            assert_eq!(told, [told_image("disk.img"), told_image("plain.bin")]);
            let image_path = source.join("disk.img").display().to_string();
            let named: &[String] = if cut_as_image { &[image_path] } else { &[] };
            assert_eq!(outcome.disk_images, named);
            let root = outcome.snapshot.tree;
            let image_extents = file_extents(&repo, &root, &source.join("disk.img"));
            let plain_lengths =
                chunk_lengths(&file_extents(&repo, &root, &source.join("plain.bin")));
            if fixed_chunks.is_none() {
                assert!(
                    plain_lengths.iter().all(|&l| l <= 256 << 10)
                        && plain_lengths.iter().any(|&l| l != plain_lengths[0]),
                    "the plain file is cut by the repository's chunker: {plain_lengths:?}"
                );
            } else {
                assert!(
                    plain_lengths[..plain_lengths.len() - 1]
                        .iter()
                        .all(|&l| l == 64 << 10)
                );
            }
            if images_by_content {
                assert!(
                    chunk_lengths(&image_extents)
                        .iter()
                        .all(|&l| l <= 256 << 10)
                );
            } else {
                let mut expected = vec![volume_chunk; length / volume_chunk as usize];
                expected.push(length as u64 % volume_chunk);
                assert_eq!(chunk_lengths(&image_extents), expected);
                let first = Extent::Chunk {
                    id: repo.blob_id(&image[..volume_chunk as usize]),
                    length: volume_chunk as u32,
                };
                assert_eq!(image_extents[0], first);
            }
            let restored =
                restore_source(&repo, &root, &source, &tmp.path().join(format!("out{run}")));
            assert!(fs::read(restored.join("disk.img")).expect("restored image") == image);
            assert!(fs::read(restored.join("plain.bin")).expect("restored plain") == plain);
        }
    }

    /// A raw image with holes, backed up as a file and then with `--volume` into the same
    /// repository: the volume backup stores only the two chunks that straddle a hole's edge
    /// (the file's end there where the volume's chunk goes on with zeros).
    #[test]
    fn an_image_backed_up_as_a_file_shares_its_chunks_with_a_volume_backup() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = tmp.path().join("src");
        fs::create_dir_all(&source).expect("src");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let chunk = repo.config().params.volume_chunk_size as usize;
        // Data from 0 to 3.5 chunks, a hole, data from 9 to 17.25 chunks, a hole to 24.
        let mut first = noise(chunk * 7 / 2, 21);
        first[512..520].copy_from_slice(b"EFI PART");
        let second = noise(chunk * 33 / 4, 22);
        let image = source.join("disk.img");
        write_sparse(
            &image,
            24 * chunk as u64,
            &[(0, &first), (9 * chunk as u64, &second)],
        );

        let options = BackupOptions {
            paths: vec![source.clone()],
            host: "h".to_owned(),
            ..BackupOptions::default()
        };
        let as_file = backup(&repo, &options, &Cancel::new()).expect("file backup");
        assert_eq!(as_file.snapshot.summary.data_blobs_added, 4 + 9);
        let volume = crate::backup::VolumeOptions {
            device: image.clone(),
            host: "h".to_owned(),
            ..crate::backup::VolumeOptions::default()
        };
        let as_volume =
            crate::backup::backup_volume(&repo, &volume, &Cancel::new()).expect("volume backup");
        assert_eq!(as_volume.snapshot.summary.data_blobs_added, 2);
    }
}
