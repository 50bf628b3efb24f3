; Inno Setup 6 script: a per-user installer (no admin rights) for the PyInstaller bundle dist\casa-studio.
; Built by packaging\build-windows.ps1:
;   ISCC.exe /DAppVersion=0.1.0 /DVariant= packaging\windows\casa-studio.iss        (CPU torch)
;   ISCC.exe /DAppVersion=0.1.0 /DVariant=-cuda packaging\windows\casa-studio.iss   (CUDA torch)
; and by packaging/build-windows-wine.sh (under Wine), which passes /DBundle=<its dist\windows\casa-studio>
; and /DOutputDir= as absolute paths, since dist\casa-studio there is the Linux bundle.
; No file associations: .safetensors LoRA files belong to other apps.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef Variant
  #define Variant ""
#endif
#define AppName "CASA Studio"
#ifndef Bundle
  #define Bundle "..\..\dist\casa-studio"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif

[Setup]
; One AppId for both variants: installing one replaces the other.
AppId={{6FF268A8-E743-5655-B0E7-6583A305899D}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=CASA Studio developers
PrivilegesRequired=lowest
DefaultDirName={localappdata}\Programs\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
DisableDirPage=auto
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=casa-studio{#Variant}-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\casa-studio.ico
UninstallDisplayIcon={app}\casa-gui.exe
UninstallDisplayName={#AppName}
Compression=lzma2
SolidCompression=yes
LZMANumBlockThreads=4
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#Bundle}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; A reinstall over another version or variant must not keep stale libraries (say CUDA DLLs after a CPU install).
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{autoprograms}\{#AppName}\{#AppName}"; Filename: "{app}\casa-gui.exe"
; A console in the install folder, where `casa` is found first (the installer leaves PATH alone).
Name: "{autoprograms}\{#AppName}\CASA command line"; Filename: "{cmd}"; Parameters: "/k casa --help"; WorkingDir: "{app}"
Name: "{autoprograms}\{#AppName}\Uninstall {#AppName}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\casa-gui.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\casa-gui.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent
