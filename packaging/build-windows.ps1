# Build CASA Studio for Windows: the PyInstaller bundle (dist\casa-studio\), a per-user Inno Setup
# installer, then smoke-test the bundle and the installed copy. The same steps as build-linux.sh, and
# as packaging/build-windows-wine.sh (the same build under Wine on Linux; its README section says
# what only real Windows checks): bundle smoke test, ISCC, silent install, the installed casa.exe on
# the demo, silent uninstall, nothing of the app left.
#
#   pwsh -File packaging\build-windows.ps1 [-Torch cpu|cuda] [-Clean] [-TorchIndex URL] [-SkipSmoke]
#
# Needs PowerShell 7 (pwsh), Python 3.11 on PATH (`python`) and Inno Setup 6 (ISCC.exe; `choco install innosetup`).
param(
    [ValidateSet("cpu", "cuda")] [string] $Torch = "cpu",
    [switch] $Clean,
    [string] $TorchIndex = "",
    [switch] $SkipSmoke
)
$ErrorActionPreference = "Stop"
Set-Location (Resolve-Path "$PSScriptRoot\..")

function Invoke-Checked {
    # Run a native program; stop the build when it fails (PowerShell does not, by itself).
    $exe, $rest = $args
    & $exe @rest
    if ($LASTEXITCODE -ne 0) { throw "$exe $rest failed with exit code $LASTEXITCODE" }
}

$Version = (Select-String -Path casa_core\__init__.py -Pattern '^__version__ = "(.*)"').Matches[0].Groups[1].Value
$TorchVersion = if ($env:TORCH_VERSION) { $env:TORCH_VERSION } else { "2.13.0" }
if ($Torch -eq "cpu") {
    $TorchSpec = "torch==$TorchVersion+cpu"; $Index = "https://download.pytorch.org/whl/cpu"
    $Venv = "build\venv-pkg"; $Variant = ""
} else {
    $TorchSpec = "torch==$TorchVersion"; $Index = "https://download.pytorch.org/whl/cu128"
    $Venv = "build\venv-pkg-cuda"; $Variant = "-cuda"
}
if ($TorchIndex) { $Index = $TorchIndex }
$Work = "build\packaging"
$Bundle = "dist\casa-studio"
New-Item -ItemType Directory -Force -Path $Work, dist | Out-Null
if (-not $env:SOURCE_DATE_EPOCH) { $env:SOURCE_DATE_EPOCH = (git log -1 --format=%ct) }
$env:PYTHONHASHSEED = "0"
$started = Get-Date

# 1. The build venv: torch first, pinned, from its index; then the project's runtime deps and PyInstaller.
$stamp = "$TorchSpec " + (Get-FileHash packaging\constraints.txt).Hash.Substring(0, 16) + (Get-FileHash pyproject.toml).Hash.Substring(0, 16)
$stampFile = "$Venv\.casa-build"
if ($Clean -or -not (Test-Path $stampFile) -or ((Get-Content $stampFile) -ne $stamp)) {
    Write-Host "== build-windows: creating $Venv ($TorchSpec)"
    if (Test-Path $Venv) { Remove-Item -Recurse -Force $Venv }
    Invoke-Checked python -m venv $Venv
    Invoke-Checked "$Venv\Scripts\python.exe" -m pip install --quiet --index-url $Index $TorchSpec
    Invoke-Checked "$Venv\Scripts\python.exe" -m pip install --quiet -c packaging\constraints.txt ".[gui]" pyinstaller
    # Only the dependencies stay: the spec freezes casa_core / casa_gui from the working tree.
    Invoke-Checked "$Venv\Scripts\python.exe" -m pip uninstall --quiet -y casa-studio
    $installed = & "$Venv\Scripts\python.exe" -m pip list --format=freeze | ForEach-Object { ($_ -split "==")[0].ToLower() }
    foreach ($unwanted in "diffusers", "transformers", "peft") {
        if ($installed -contains $unwanted) { throw "$unwanted is in $Venv; it must not be bundled" }
    }
    Set-Content -Path $stampFile -Value $stamp
}

# 2. Freeze.
$pyiArgs = @("--noconfirm", "--log-level", "WARN", "--distpath", "dist", "--workpath", "$Work\pyinstaller")
if ($Clean) { $pyiArgs += "--clean" }
Invoke-Checked "$Venv\Scripts\pyinstaller.exe" @pyiArgs packaging\casa-studio.spec
$bundleBytes = (Get-ChildItem -Recurse -File $Bundle | Measure-Object -Property Length -Sum).Sum
# torch's DLLs need the VC++ runtime; PyInstaller takes it from system32: it must be in the bundle.
if (-not (Test-Path "$Bundle\_internal\msvcp140.dll")) { throw "the bundle lacks msvcp140.dll (the VC++ runtime)" }

# 3. Smoke test of the bundle (casa-gui.exe is windowed: wait for it with Start-Process).
function Test-Bundle([string] $dir, [string] $out) {
    New-Item -ItemType Directory -Force -Path $out | Out-Null
    Invoke-Checked "$dir\casa.exe" --version
    Invoke-Checked "$dir\casa.exe" convert --demo -o "$out\demo-output.safetensors" --report "$out\demo-report.json"
    if (-not (Test-Path "$out\demo-output.safetensors")) { throw "casa convert --demo wrote nothing" }
    $env:QT_QPA_PLATFORM = "offscreen"
    $gui = Start-Process -FilePath "$dir\casa-gui.exe" -ArgumentList "--self-test", "`"$out\shot.png`"" -Wait -PassThru
    Remove-Item Env:QT_QPA_PLATFORM
    if ($gui.ExitCode -ne 0 -or -not (Test-Path "$out\shot.png")) { throw "casa-gui --self-test failed ($($gui.ExitCode))" }
}
if (-not $SkipSmoke) { Test-Bundle $Bundle "$((Resolve-Path $Work).Path)\smoke" }

# 4. Installer.
$iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe"
Invoke-Checked $iscc /Q "/DAppVersion=$Version" "/DVariant=$Variant" packaging\windows\casa-studio.iss
$setup = "dist\casa-studio$Variant-$Version-windows-x64-setup.exe"

# 5. Install silently for this user, run the installed `casa` on the demo, uninstall, check nothing is left.
if (-not $SkipSmoke) {
    $app = "$env:LOCALAPPDATA\Programs\CASA Studio"
    $menu = "$env:APPDATA\Microsoft\Windows\Start Menu\Programs\CASA Studio"
    $ukey = "HKCU:\Software\Microsoft\Windows\CurrentVersion\Uninstall\{6FF268A8-E743-5655-B0E7-6583A305899D}_is1"
    $installOut = "$((Resolve-Path $Work).Path)\install-smoke"
    New-Item -ItemType Directory -Force -Path $installOut | Out-Null
    $p = Start-Process -FilePath $setup -ArgumentList "/VERYSILENT", "/SUPPRESSMSGBOXES", "/NORESTART", "/CURRENTUSER", "/LOG=`"$installOut\setup.log`"" -Wait -PassThru
    if ($p.ExitCode -ne 0) { throw "installer failed ($($p.ExitCode))" }
    if (-not (Test-Path "$menu\CASA Studio.lnk")) { throw "no Start-menu entry in $menu" }
    if (-not (Test-Path $ukey)) { throw "no uninstall entry $ukey" }
    Invoke-Checked "$app\casa.exe" --version
    Invoke-Checked "$app\casa.exe" convert --demo -o "$installOut\demo-output.safetensors" --report "$installOut\demo-report.json"
    $p = Start-Process -FilePath "$app\unins000.exe" -ArgumentList "/VERYSILENT", "/SUPPRESSMSGBOXES", "/NORESTART" -Wait -PassThru
    if ($p.ExitCode -ne 0) { throw "uninstaller failed ($($p.ExitCode))" }
    # The uninstaller finishes from a copy in %TEMP%: give it a moment to remove the folder.
    for ($i = 0; $i -lt 30 -and (Test-Path $app); $i++) { Start-Sleep -Seconds 1 }
    $left = @($app, $menu, $ukey) | Where-Object { Test-Path $_ }
    if ($left) { throw "the uninstaller left: $($left -join ', ')" }
}

$minutes = [math]::Round(((Get-Date) - $started).TotalMinutes, 1)
Write-Host ("== build-windows: bundle {0:N0} MB, installer {1:N0} MB ({2}), {3} min" -f `
    ($bundleBytes / 1MB), ((Get-Item $setup).Length / 1MB), $setup, $minutes)
